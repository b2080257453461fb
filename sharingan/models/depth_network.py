"""Depth task network T of SharinGAN (dissertation §2.2.2.3; docs/ref-sharingan.md §1.2).

The T2Net/GASDA UNet the official code uses. Encoder: 7x7 stem and three encoder blocks, each followed by
average pooling (1/2 .. 1/16). Centre: three "inception" blocks (parallel 3x3 convolutions with dilation
1, 3, 5, concatenated, fused by a 3x3 conv, residual) and an upsampling block back to 1/8. Decoder with
*scaled skips* (encoder features multiplied by 0.1, 0.05 and 0.01 before concatenation) and four tanh depth
outputs at 1/8, 1/4, 1/2 and full resolution, each coarser output upsampled (nearest) into the next level.
Depth is normalised to [-1, 1] <-> 0..80 m. At `width=1`: ~54.6 M parameters (~42 M in the centre blocks).
Initial weights as the official `init_weights('kaiming')` (`sharingan.models.initialisation`).

`forward` returns the four outputs coarse to fine (the losses use all four; inference uses the last).
Input height and width must be divisible by 16.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sharingan.models.generator import DecoderUpBlock, EncoderBlock, channels
from sharingan.models.initialisation import initialise_like_t2net


class ReflectionPadAnySize(nn.Module):
    """Reflection padding, falling back to replicate padding when the map is too small to reflect.

    At the paper's 192x640 input the centre maps are 12x40 and reflection always applies (identical to the
    official network); the fallback only lets tiny miniature inputs (e.g. 32x64 -> 2x4) run.
    """

    def __init__(self, padding: int) -> None:
        super().__init__()
        self.padding = padding

    def forward(self, x: Tensor) -> Tensor:
        mode = "reflect" if self.padding < min(x.shape[-2:]) else "replicate"
        return F.pad(x, (self.padding,) * 4, mode=mode)


class InceptionBlock(nn.Module):
    """Parallel dilated 3x3 convs (dilation 1, 3, 5) -> concat -> BN-PReLU -> 3x3 fuse -> BN, + x, PReLU."""

    def __init__(self, num_channels: int, activation: nn.Module, branches: int = 3) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(ReflectionPadAnySize(2 * i + 1),
                          nn.Conv2d(num_channels, num_channels, 3, dilation=2 * i + 1, bias=False))
            for i in range(branches))
        self.merge = nn.Sequential(nn.BatchNorm2d(num_channels * branches), activation)
        self.fuse = nn.Sequential(nn.ReflectionPad2d(1),
                                  nn.Conv2d(num_channels * branches, num_channels, 3, bias=False),
                                  nn.BatchNorm2d(num_channels))
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        merged = self.merge(torch.cat([branch(x) for branch in self.branches], 1))
        return self.activation(x + self.fuse(merged))


class OutputBlock(nn.Sequential):
    """Reflect-padded conv (no bias) -> tanh: one depth map in [-1, 1]."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__(nn.ReflectionPad2d(kernel_size // 2),
                         nn.Conv2d(in_channels, out_channels, kernel_size, bias=False), nn.Tanh())


class DepthUNet(nn.Module):
    """T: image (B, 3, H, W) -> [depth at 1/8, 1/4, 1/2, 1], each (B, 1, h, w) in [-1, 1]."""

    def __init__(self, in_channels: int = 3, out_channels: int = 1, width: float = 1.0,
                 num_inception_blocks: int = 3, skip_weight: float = 0.1) -> None:
        super().__init__()
        c1, c2, c4, c8 = (channels(64 * m, width) for m in (1, 2, 4, 8))
        half = max(c1 // 2, 1)
        self.skip_weight = skip_weight
        self.activation = nn.PReLU()
        act = self.activation
        self.pool = nn.AvgPool2d(2)
        self.conv1 = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(in_channels, c1, 7, bias=False),
                                   nn.BatchNorm2d(c1), act)
        self.conv2 = EncoderBlock(c1, c2, c2, act)
        self.conv3 = EncoderBlock(c2, c4, c4, act)
        self.conv4 = EncoderBlock(c4, c8, c8, act)
        self.center = nn.Sequential(*[InceptionBlock(c8, act) for _ in range(num_inception_blocks)],
                                    DecoderUpBlock(c8, c8, c4, act))
        self.deconv4 = DecoderUpBlock(c4 + c4, c8, c2, act)
        self.deconv3 = DecoderUpBlock(c2 + c2 + out_channels, c4, c1, act)
        self.deconv2 = DecoderUpBlock(c1 + c1 + out_channels, c2, half, act)
        self.output4 = OutputBlock(c4 + c4, out_channels, 3)
        self.output3 = OutputBlock(c2 + c2 + out_channels, out_channels, 3)
        self.output2 = OutputBlock(c1 + c1 + out_channels, out_channels, 3)
        self.output1 = OutputBlock(half + out_channels, out_channels, 7)
        initialise_like_t2net(self)  # official init: Kaiming-normal convs, zero biases, BN scales ~U(0.02, 1)

    @staticmethod
    def upsample(x: Tensor) -> Tensor:
        return F.interpolate(x, scale_factor=2, mode="nearest")

    def forward(self, x: Tensor) -> list[Tensor]:
        if x.shape[-2] % 16 or x.shape[-1] % 16:
            raise ValueError(f"depth network input height and width must be divisible by 16, got {tuple(x.shape)}")
        conv1 = self.pool(self.conv1(x))            # 1/2
        conv2 = self.pool(self.conv2(conv1))        # 1/4
        conv3 = self.pool(self.conv3(conv2))        # 1/8
        center_in = self.pool(self.conv4(conv3))    # 1/16
        center_out = self.center(center_in)         # 1/8
        w = self.skip_weight
        level4 = torch.cat([center_out, conv3 * w], 1)
        output4 = self.output4(level4)
        deconv4 = self.deconv4(level4)              # 1/4
        level3 = torch.cat([deconv4, conv2 * w * 0.5, self.upsample(output4)], 1)
        output3 = self.output3(level3)
        deconv3 = self.deconv3(level3)              # 1/2
        level2 = torch.cat([deconv3, conv1 * w * 0.1, self.upsample(output3)], 1)
        output2 = self.output2(level2)
        deconv2 = self.deconv2(level2)              # 1
        output1 = self.output1(torch.cat([deconv2, self.upsample(output2)], 1))
        return [output4, output3, output2, output1]
