"""WGAN-GP critic D of SharinGAN for depth (dissertation eqs. 2.1-2.3; docs/ref-sharingan.md §1.3).

D scores G's *output images* (never features) of both domains. A ladder of 14 3x3 convolutions (each with
batch norm and ReLU), every second one with stride 2 (seven halvings: 192x640 -> 2x5), then a fully connected
head 512·2·5 = 5120 -> 1024 -> 512 -> 1 (batch norm + ReLU between, linear score). ~19.9 M parameters.

Any input size: an adaptive average pool resizes the last feature map to `pool_size` = (2, 5) before the
head. At the official 192x640 input the map is already 2x5, so the pool is the identity and the network is
exactly the official one (Linear(5120, ...)); other sizes (e.g. the 32x64 miniature) work unchanged.
`width` multiplies the conv channels (default = paper size). Initial weights: the official critic has no
explicit initialisation, i.e. PyTorch 0.4.1's defaults (`sharingan.models.initialisation.initialise_critic`).
"""

from __future__ import annotations

from torch import Tensor, nn

from sharingan.models.initialisation import initialise_critic

LADDER = (32, 32, 64, 64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512)


class ImageCritic(nn.Module):
    """D: (B, 3, H, W) -> (B,) scores. `batch_norm=False` removes every batch norm (as WGAN-GP advises)."""

    def __init__(self, in_channels: int = 3, width: float = 1.0, pool_size: tuple[int, int] = (2, 5),
                 hidden: tuple[int, int] = (1024, 512), batch_norm: bool = True) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        previous = in_channels
        for index, base in enumerate(LADDER):
            out = max(int(round(base * width)), 1)
            layers.append(nn.Conv2d(previous, out, 3, stride=2 if index % 2 else 1, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out))
            layers.append(nn.ReLU(inplace=True))
            previous = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(tuple(pool_size))
        head: list[nn.Module] = []
        size = previous * pool_size[0] * pool_size[1]
        for units in hidden:
            units = max(int(round(units * width)), 1)
            head += [nn.Linear(size, units)] + ([nn.BatchNorm1d(units)] if batch_norm else []) + [nn.ReLU(True)]
            size = units
        head.append(nn.Linear(size, 1))
        self.head = nn.Sequential(*head)
        initialise_critic(self)  # official: PyTorch 0.4.1 defaults, i.e. batch-norm scales ~U(0, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.pool(self.features(x)).flatten(1)).squeeze(1)
