"""SfS supervision (dissertation Eq. 2.9); the face weights of the overall loss (Eq. 2.10, alpha = (1, 10, 0.1))
are `sharingan.weights` of experiments/chapter2/faces_base.yaml.

As in the official `sfs_loss.py` and SfSNet's Caffe prototxt (docs/ref-sharingan.md §2.5):
    L_sfs = 0.5 L1(normal * m) + 0.5 L1(albedo * m) + 0.1 L2(lighting) + 0.5 L1(shading * albedo * m, image * m)
where L1 = sum |a - b| / B (summed over pixels and channels, averaged over the batch), L2 = sum (a - b)^2 / (2B),
normals are compared in their [0, 1] storage encoding, and the reconstruction is compared with the ORIGINAL
image (not G's output). The same loss is used with ground truth on synthetic faces and with pseudo-labels on
real faces; the task loss is L_sfs(real) + L_sfs(synthetic).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from sharingan.models.sfsnet import LIGHTING_DIM, render

TERMS = ("normal", "albedo", "lighting", "reconstruction")


@dataclass(frozen=True)
class SfSWeights:
    """lambda_N, lambda_A, lambda_Light, lambda_recon of Eq. 2.9 (0.5, 0.5, 0.1, 0.5 in SfSNet). No defaults in
    code: the values are `sfs_weights` of experiments/chapter2/faces_base.yaml (issue 14, one source of truth)."""

    normal: float
    albedo: float
    lighting: float
    reconstruction: float


def _check(name: str, tensor: torch.Tensor, shape: tuple) -> None:
    if tuple(tensor.shape) != tuple(shape):
        raise ValueError(f"SfS loss: {name} has shape {tuple(tensor.shape)}, expected {tuple(shape)}")


def masked_l1(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sum |prediction * m - target * m| / B."""
    return (prediction * mask - target * mask).abs().sum() / prediction.shape[0]


def lighting_l2(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """sum (prediction - target)^2 / (2 B) over the 27 SH coefficients."""
    return (prediction - target).pow(2).sum() / (2.0 * prediction.shape[0])


def sfs_supervision(prediction: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor],
                    image: torch.Tensor, weights: SfSWeights) -> dict[str, torch.Tensor]:
    """Eq. 2.9 for one domain -> {"total", "normal", "albedo", "lighting", "reconstruction"} (unweighted terms).

    prediction: SfSNet output {"normal" [0,1]-encoded, "albedo", "lighting" (B,27)};
    target: {"normal", "albedo", "lighting", "mask" (B,1,H,W) in {0,1}} (ground truth or pseudo-labels);
    image: the original input image (B,3,H,W) in [0,1].
    """
    batch, _, height, width = image.shape
    for key in ("normal", "albedo"):
        _check(f"predicted {key}", prediction[key], (batch, 3, height, width))
        _check(f"target {key}", target[key], (batch, 3, height, width))
    _check("predicted lighting", prediction["lighting"], (batch, LIGHTING_DIM))
    _check("target lighting", target["lighting"], (batch, LIGHTING_DIM))
    mask = target["mask"]
    if mask.dim() == 3:
        mask = mask[:, None]
    _check("target mask", mask, (batch, 1, height, width))
    mask = mask.to(image.dtype)

    _, reconstruction = render(prediction["normal"], prediction["albedo"], prediction["lighting"])
    terms = {
        "normal": masked_l1(prediction["normal"], target["normal"], mask),
        "albedo": masked_l1(prediction["albedo"], target["albedo"], mask),
        "lighting": lighting_l2(prediction["lighting"], target["lighting"]),
        "reconstruction": masked_l1(reconstruction, image, mask),
    }
    terms["total"] = sum(getattr(weights, name) * terms[name] for name in TERMS)
    return terms

