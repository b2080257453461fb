"""RBDN generator G for face normals (dissertation §2.3.2.2; docs/ref-sharingan.md §1.4).

Recursively branched deconvolutional network: a full-resolution trunk plus three nested branches that each
halve the resolution with a strided convolution and come back up with a transposed convolution, so the trunk
sees context at 1/2, 1/4 and 1/8 scale. All convolutions are 3x3 with bias, followed by batch norm and ReLU,
except the last one, which is linear: the shared-domain image lives in the same [0, 1] range as the input
but is not clipped to it. At `width=1` there are 3.41 M parameters, as in the official `RBDN_original.py`.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv_block(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=True),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def _up_block(channels: int) -> nn.Sequential:
    """Transposed 3x3 convolution, stride 2 (output padding 1): doubles the resolution exactly."""
    return nn.Sequential(
        nn.ConvTranspose2d(channels, channels, 3, stride=2, padding=1, output_padding=1, bias=True),
        nn.BatchNorm2d(channels),
        nn.ReLU(inplace=True),
    )


class RBDNBranch(nn.Module):
    """One recursive branch: conv, strided conv down, [inner branch], merge, transposed conv up, conv.

    The innermost branch (`inner=None`) is conv, strided conv, conv, transposed conv, conv.
    An outer branch concatenates its down-sampled feature with the inner branch's output (2C channels),
    reduces to C with a conv, goes up with a transposed conv and ends with a conv.
    """

    def __init__(self, channels: int, inner: RBDNBranch | None) -> None:
        super().__init__()
        self.entry = _conv_block(channels, channels)
        self.down = _conv_block(channels, channels, stride=2)
        self.inner = inner
        if inner is None:
            self.middle = _conv_block(channels, channels)
        else:
            self.middle = _conv_block(2 * channels, channels)
        self.up = _up_block(channels)
        self.exit = _conv_block(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        down = self.down(self.entry(x))
        if self.inner is None:
            merged = self.middle(down)
        else:
            merged = self.middle(torch.cat([down, self.inner(down)], dim=1))
        return self.exit(self.up(merged))


class RBDN(nn.Module):
    """Image -> shared-domain image of the same size (H and W multiples of 8).

    Args:
        width: channel multiplier; 1.0 = the paper's 128 channels (3.41 M parameters).
        branches: number of nested branches (3 in the paper).
        trunk_layers: 128->128 convolutions in the trunk after the merge (4 in the paper).
    """

    def __init__(self, width: float = 1.0, branches: int = 3, trunk_layers: int = 4, in_channels: int = 3,
                 out_channels: int = 3) -> None:
        super().__init__()
        if width <= 0 or branches < 1:
            raise ValueError(f"RBDN: width must be > 0 and branches >= 1, got width={width}, branches={branches}")
        channels = max(1, round(128 * width))
        self.channels = channels
        self.downsampling = 2**branches
        self.input_norm = nn.BatchNorm2d(in_channels)
        self.scale1 = _conv_block(in_channels, channels)
        branch = None
        for _ in range(branches):
            branch = RBDNBranch(channels, branch)
        self.branch = branch
        trunk = [_conv_block(2 * channels, channels)]
        trunk += [_conv_block(channels, channels) for _ in range(trunk_layers)]
        self.trunk = nn.Sequential(*trunk)
        self.output = nn.Conv2d(channels, out_channels, 3, padding=1, bias=True)  # linear output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[-1] % self.downsampling or x.shape[-2] % self.downsampling:
            raise ValueError(f"RBDN expects (B,C,H,W) with H and W multiples of {self.downsampling}; "
                             f"got {tuple(x.shape)}")
        scale1 = self.scale1(self.input_norm(x))
        features = torch.cat([scale1, self.branch(scale1)], dim=1)
        return self.output(self.trunk(features))
