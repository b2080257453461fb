"""Image-level WGAN-GP critic D for faces (dissertation Eq. 2.1-2.3; docs/ref-sharingan.md §1.5).

A ladder of 3x3 convolutions with ReLU and no batch norm (a gradient penalty is computed per sample, which
batch statistics would break): pairs of (stride 1, stride 2) convolutions with channels 32, 64, 128, 256,
512, 512, then three linear layers 2048 -> 1024 -> 512 -> 1 with no output activation (a Wasserstein score).
At `width=1` and 128x128 input there are 12.06 M parameters, as in the official `disc.py`.
"""

from __future__ import annotations

import torch
from torch import nn

LADDER = (32, 64, 128, 256, 512, 512)


class FaceCritic(nn.Module):
    """(B,3,S,S) shared-domain image -> (B,1) critic score; S must equal `image_size`.

    Args:
        image_size: input side; fixes the flattened size (512 * ceil(S/64)^2 at width 1; 2048 at 128).
        width: channel multiplier for the convolutions and the hidden linear layers.
    """

    def __init__(self, image_size: int = 128, width: float = 1.0, in_channels: int = 3) -> None:
        super().__init__()
        if width <= 0 or image_size < 1:
            raise ValueError(f"FaceCritic: width and image_size must be positive, got {width}, {image_size}")
        self.image_size = image_size
        layers: list[nn.Module] = []
        channels = in_channels
        for base in LADDER:
            out = max(1, round(base * width))
            layers += [nn.Conv2d(channels, out, 3, padding=1), nn.ReLU(inplace=True),
                       nn.Conv2d(out, out, 3, stride=2, padding=1), nn.ReLU(inplace=True)]
            channels = out
        self.features = nn.Sequential(*layers)
        side = image_size
        for _ in LADDER:  # a 3x3, stride-2, padding-1 convolution maps a side n to ceil(n / 2)
            side = (side + 1) // 2
        hidden1, hidden2 = max(1, round(1024 * width)), max(1, round(512 * width))
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * side * side, hidden1), nn.ReLU(inplace=True),
            nn.Linear(hidden1, hidden2), nn.ReLU(inplace=True),
            nn.Linear(hidden2, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(f"FaceCritic expects (B,C,{self.image_size},{self.image_size}); got {tuple(x.shape)}")
        return self.classifier(self.features(x))
