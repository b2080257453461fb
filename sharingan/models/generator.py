"""Shared generator G of SharinGAN for depth (dissertation §2.2.1; docs/ref-sharingan.md §1.1).

A ResNet-style autoencoder (the T2Net/GASDA generator the official code uses): 7x7 stem, two encoder blocks
that each halve the resolution with average pooling, seven residual blocks at 1/4 resolution (channels capped
at 2·base), two upsampling decoder blocks (transposed convolutions) and a 7x7 head with **tanh**, so G(x) is
an image in [-1, 1] like its input. Batch norm; one PReLU module (a single slope) shared by the whole network,
as in the official code. At `width=1` (base 64 channels): ~3.12 M parameters. Initial weights as the
official `init_weights('kaiming')` (`sharingan.models.initialisation`).

`width` multiplies every channel count (the miniature and the tests use small widths; default = paper size).
"""

from __future__ import annotations

from torch import Tensor, nn

from sharingan.models.initialisation import initialise_like_t2net


def channels(base: int, width: float) -> int:
    return max(int(round(base * width)), 1)


class EncoderBlock(nn.Sequential):
    """[3x3 conv -> BN -> PReLU] x 2 (no bias before BN)."""

    def __init__(self, in_channels: int, middle_channels: int, out_channels: int, activation: nn.Module) -> None:
        super().__init__(
            nn.Conv2d(in_channels, middle_channels, 3, padding=1, bias=False), nn.BatchNorm2d(middle_channels),
            activation,
            nn.Conv2d(middle_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels),
            activation,
        )


class DecoderUpBlock(nn.Sequential):
    """Reflect-pad 3x3 conv -> BN -> PReLU -> 3x3 transposed conv stride 2 (with bias) -> BN -> PReLU: x2 size."""

    def __init__(self, in_channels: int, middle_channels: int, out_channels: int, activation: nn.Module) -> None:
        super().__init__(
            nn.ReflectionPad2d(1), nn.Conv2d(in_channels, middle_channels, 3, bias=False),
            nn.BatchNorm2d(middle_channels), activation,
            nn.ConvTranspose2d(middle_channels, out_channels, 3, stride=2, padding=1, output_padding=1),
            nn.BatchNorm2d(out_channels), activation,
        )


class ResidualBlock(nn.Module):
    """The official "InceptionBlock" of width 1: two reflect-padded 3x3 conv-BN, identity skip, PReLU."""

    def __init__(self, num_channels: int, activation: nn.Module) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(num_channels, num_channels, 3, bias=False),
            nn.BatchNorm2d(num_channels), activation,
            nn.ReflectionPad2d(1), nn.Conv2d(num_channels, num_channels, 3, bias=False),
            nn.BatchNorm2d(num_channels),
        )
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        return self.activation(x + self.body(x))


class ResNetGenerator(nn.Module):
    """G: image (B, 3, H, W) in [-1, 1] -> shared-domain image (B, 3, H, W) in [-1, 1] (H, W divisible by 4)."""

    def __init__(self, in_channels: int = 3, out_channels: int = 3, width: float = 1.0,
                 num_residual_blocks: int = 7) -> None:
        super().__init__()
        base = channels(64, width)
        inner = channels(128, width)
        self.activation = nn.PReLU()
        act = self.activation
        self.encoder = nn.Sequential(
            nn.ReflectionPad2d(3), nn.Conv2d(in_channels, base, 7, bias=False), nn.BatchNorm2d(base), act,
            EncoderBlock(base, inner, inner, act), nn.AvgPool2d(2),
            EncoderBlock(inner, inner, inner, act), nn.AvgPool2d(2),
        )
        self.bottleneck = nn.Sequential(*[ResidualBlock(inner, act) for _ in range(num_residual_blocks)])
        self.decoder = nn.Sequential(
            DecoderUpBlock(inner, inner, inner, act),
            DecoderUpBlock(inner, inner, base, act),
            nn.ReflectionPad2d(3), nn.Conv2d(base, out_channels, 7), nn.Tanh(),
        )
        initialise_like_t2net(self)  # official init: Kaiming-normal convs, zero biases, BN scales ~U(0.02, 1)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-2] % 4 or x.shape[-1] % 4:
            raise ValueError(f"generator input height and width must be divisible by 4, got {tuple(x.shape)}")
        return self.decoder(self.bottleneck(self.encoder(x)))
