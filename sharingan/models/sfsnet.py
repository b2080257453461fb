"""SfSNet, the face task network T, and its spherical-harmonics shading (dissertation Eq. 2.9, ref. [22];
docs/ref-sharingan.md §1.6).

One shared stem (conv 7x7, conv 3x3, strided conv 3x3 -> half resolution), then two branches of identical
structure (normals, albedo): five pre-activation residual blocks, BN-ReLU, bilinear x2 up-sampling, conv 1x1,
conv 3x3, and a linear conv 1x1 to 3 channels. The light branch concatenates the stem output with the two
branch features, reduces them with a conv 1x1, averages over space and regresses 27 spherical-harmonics
coefficients (9 per colour channel, ordered [R 0:9 | G 9:18 | B 18:27]). 3.42 M parameters at `width=1`.

Normals are predicted and stored in the [0, 1] encoding v = (n + 1) / 2 of the official code; `decode_normals`
turns them into unit vectors. The image model is reconstruction = shading(normals, lighting) * albedo.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

SH_COEFFICIENTS = 9
LIGHTING_DIM = 3 * SH_COEFFICIENTS

# Lambertian attenuation of the SH bands 0, 1, 2 times the normalisation of the real SH basis (§1.6).
_ATTENUATION = (math.pi, 2.0 * math.pi / 3.0, math.pi / 4.0)
SH_C1 = _ATTENUATION[0] / math.sqrt(4.0 * math.pi)
SH_C2 = _ATTENUATION[1] * math.sqrt(3.0 / (4.0 * math.pi))
SH_C3 = _ATTENUATION[2] * 0.5 * math.sqrt(5.0 / (4.0 * math.pi))
SH_C4 = _ATTENUATION[2] * 3.0 * math.sqrt(5.0 / (12.0 * math.pi))
SH_C5 = _ATTENUATION[2] * 3.0 * math.sqrt(5.0 / (48.0 * math.pi))


def decode_normals(encoded: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """[0, 1]-encoded normals (B,3,H,W) -> unit normals n = normalize(2v - 1)."""
    return F.normalize(2.0 * encoded - 1.0, dim=1, eps=eps)


def encode_normals(normals: torch.Tensor) -> torch.Tensor:
    """Unit normals in [-1, 1] -> the [0, 1] storage encoding (n + 1) / 2."""
    return (normals + 1.0) / 2.0


def sh_basis(normals: torch.Tensor) -> torch.Tensor:
    """Unit normals (B,3,H,W), channels (x, y, z) -> the 9 attenuated SH basis images (B,9,H,W).

    Order: [c1, c2 nz, c2 nx, c2 ny, c3 (2nz^2 - nx^2 - ny^2), c4 nx nz, c4 ny nz, c5 (nx^2 - ny^2), c4 nx ny].
    """
    if normals.dim() != 4 or normals.shape[1] != 3:
        raise ValueError(f"sh_basis: normals must be (B,3,H,W), got {tuple(normals.shape)}")
    nx, ny, nz = normals[:, 0], normals[:, 1], normals[:, 2]
    return torch.stack([
        torch.full_like(nx, SH_C1),
        SH_C2 * nz,
        SH_C2 * nx,
        SH_C2 * ny,
        SH_C3 * (2.0 * nz * nz - nx * nx - ny * ny),
        SH_C4 * nx * nz,
        SH_C4 * ny * nz,
        SH_C5 * (nx * nx - ny * ny),
        SH_C4 * nx * ny,
    ], dim=1)


def sh_shading(normals: torch.Tensor, lighting: torch.Tensor) -> torch.Tensor:
    """Lambertian shading under second-order SH lighting (SfSNet's shading layer).

    normals: unit normals (B,3,H,W); lighting: (B,27) = [R 0:9 | G 9:18 | B 18:27] -> shading (B,3,H,W),
    shading_c = sum_k lighting[c*9 + k] * basis_k(normals).
    """
    if lighting.dim() != 2 or lighting.shape[1] != LIGHTING_DIM:
        raise ValueError(f"sh_shading: lighting must be (B,{LIGHTING_DIM}), got {tuple(lighting.shape)}")
    basis = sh_basis(normals)
    if basis.shape[0] != lighting.shape[0]:
        raise ValueError(f"sh_shading: batch sizes differ (normals {normals.shape[0]}, lighting {lighting.shape[0]})")
    coefficients = lighting.reshape(-1, 3, SH_COEFFICIENTS).to(basis.dtype)
    return torch.einsum("bck,bkhw->bchw", coefficients, basis)


def render(encoded_normals: torch.Tensor, albedo: torch.Tensor, lighting: torch.Tensor) -> tuple[torch.Tensor,
                                                                                              torch.Tensor]:
    """[0,1]-encoded normals, albedo and lighting -> (shading, reconstruction = shading * albedo)."""
    shading = sh_shading(decode_normals(encoded_normals), lighting)
    return shading, shading * albedo


class PreActivationBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus identity."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(channels), nn.ReLU(inplace=False), nn.Conv2d(channels, channels, 3, padding=1),
            nn.BatchNorm2d(channels), nn.ReLU(inplace=True), nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _conv_bn_relu(in_channels: int, out_channels: int, kernel: int) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2), nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True)]


class SfSBranch(nn.Module):
    """Residual blocks at half resolution -> (features before up-sampling, 3-channel full-resolution map)."""

    def __init__(self, channels: int, blocks: int) -> None:
        super().__init__()
        self.residual = nn.Sequential(*[PreActivationBlock(channels) for _ in range(blocks)])
        self.post = nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(inplace=True))
        half = max(1, channels // 2)
        self.head = nn.Sequential(
            *_conv_bn_relu(channels, channels, 1), *_conv_bn_relu(channels, half, 3), nn.Conv2d(half, 3, 1),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.post(self.residual(x))
        upsampled = F.interpolate(features, scale_factor=2.0, mode="bilinear", align_corners=False)
        return features, self.head(upsampled)


class SfSNet(nn.Module):
    """Image (B,3,H,W) in [0,1] -> {"normal" ([0,1]-encoded), "albedo", "lighting" (B,27)}; H, W even.

    Args:
        width: channel multiplier (1.0 = 64/128 channels of the paper, 3.42 M parameters).
        blocks: residual blocks per branch (5 in the paper).
    """

    def __init__(self, width: float = 1.0, blocks: int = 5) -> None:
        super().__init__()
        if width <= 0 or blocks < 0:
            raise ValueError(f"SfSNet: width must be > 0 and blocks >= 0, got width={width}, blocks={blocks}")
        narrow, channels = max(1, round(64 * width)), max(1, round(128 * width))
        self.stem = nn.Sequential(
            nn.Conv2d(3, narrow, 7, padding=3), nn.BatchNorm2d(narrow), nn.ReLU(inplace=True),
            nn.Conv2d(narrow, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, stride=2, padding=1),
        )
        self.normal_branch = SfSBranch(channels, blocks)
        self.albedo_branch = SfSBranch(channels, blocks)
        self.light_reduce = nn.Sequential(*_conv_bn_relu(3 * channels, channels, 1))
        self.light_fc = nn.Linear(channels, LIGHTING_DIM)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform (gain sqrt 2) convolutions with zero bias; light layer N(0, 0.005), bias 1 (Caffe)."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.xavier_uniform_(module.weight, gain=math.sqrt(2.0))
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.light_fc.weight, 0.0, 0.005)
        nn.init.ones_(self.light_fc.bias)

    @torch.no_grad()
    def set_lighting_bias(self, lighting: torch.Tensor) -> None:
        """Start the light layer at a given 27-d lighting (its bias; the N(0, 0.005) weights stay): stage-2
        pretraining passes the mean lighting label (docs/chapter2-faces.md, "why the face networks learned
        nothing")."""
        lighting = torch.as_tensor(lighting, dtype=self.light_fc.bias.dtype).reshape(-1)
        if lighting.shape != (LIGHTING_DIM,) or not torch.isfinite(lighting).all():
            raise ValueError(f"SfSNet lighting bias must be {LIGHTING_DIM} finite numbers, got {tuple(lighting.shape)}")
        self.light_fc.bias.copy_(lighting.to(self.light_fc.bias.device))

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        if image.dim() != 4 or image.shape[1] != 3 or image.shape[-1] % 2 or image.shape[-2] % 2:
            raise ValueError(f"SfSNet expects (B,3,H,W) with even H and W; got {tuple(image.shape)}")
        stem = self.stem(image)
        normal_features, normal = self.normal_branch(stem)
        albedo_features, albedo = self.albedo_branch(stem)
        light = self.light_reduce(torch.cat([stem, normal_features, albedo_features], dim=1))
        lighting = self.light_fc(torch.flatten(F.adaptive_avg_pool2d(light, 1), 1))
        return {"normal": normal, "albedo": albedo, "lighting": lighting}
