"""RGBNet: the ZNet architecture on the RGB image instead of z (dissertation §3.4, Table 3.1 baseline).

The dissertation says only that RGBNet uses "additional learnable convolutional layers to map the original
image to match the input resolution of ZNet" and is otherwise ZNet, SD-initialised. The stem is therefore our
design (docs/ref-ldznet.md §1.6, §9 item 9): three stride-2 3x3 convolutions 3 -> 64 -> 128 -> 4 channels with
GroupNorm + SiLU between them, mapping 3 x 384 x 384 to 4 x 48 x 48, the shape of z. Keeping 4 output
channels lets the UNet's input convolution keep SD's weights, so RGBNet and ZNet differ only in the input
representation. The stem is trainable and default-initialised; no VAE is used.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ldznet.models.znet import ZNet


class RGBStem(nn.Module):
    """(B, 3, H, W) -> (B, 4, H/8, W/8) with three stride-2 convolutions."""

    def __init__(self, channels: Sequence[int] = (64, 128), out_channels: int = 4, groups: int = 8):
        super().__init__()
        widths = [3, *channels]
        layers: list[nn.Module] = []
        for width_in, width_out in zip(widths[:-1], widths[1:]):
            if width_out % groups:
                raise ValueError(f"RGB stem width {width_out} is not divisible by {groups} GroupNorm groups")
            layers += [nn.Conv2d(width_in, width_out, 3, stride=2, padding=1), nn.GroupNorm(groups, width_out),
                       nn.SiLU()]
        layers.append(nn.Conv2d(widths[-1], out_channels, 3, stride=2, padding=1))
        if len(channels) != 2:
            raise ValueError(f"the RGB stem has 3 stride-2 stages (x8, like the VAE): give 2 widths, got {channels}")
        self.layers = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(images)


class RGBNet(ZNet):
    """ZNet with the learnable RGB stem in place of the VAE encoder."""

    variant = "rgbnet"

    def __init__(self, components, stem_channels: Sequence[int] = (64, 128), gradient_checkpointing: bool = False):
        self.stem_channels = tuple(int(width) for width in stem_channels)
        super().__init__(components, gradient_checkpointing=gradient_checkpointing)

    def build_input_stage(self, components, latent: str, eval_seed: int) -> None:
        in_channels = components.unet.config.in_channels
        self.rgb_stem = RGBStem(self.stem_channels, out_channels=in_channels)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.rgb_stem(images)
