"""SharinGAN losses (dissertation §2.2.2, eqs. 2.1-2.10; official values in docs/ref-sharingan.md §2).

Shared by every task (the face task adds its SfS terms in `sharingan/face_losses.py`):
    wasserstein_distance (2.1), gradient_penalty (2.2), critic_loss and generator_adversarial_loss (2.3),
    reconstruction_loss (2.4), overall weights (2.10) in `SharinGANWeights`.
Monocular depth (eqs. 2.5-2.8):
    multiscale_l1_loss (2.5), edge_aware_smoothness (2.6), geometric_consistency_loss (2.7) with
    warp_right_to_left and photometric_loss, DepthTaskLoss (2.8).

Conventions: the critic scores *synthetic* shared images high; G's adversarial term pushes both domains
(synthetic down, real up), which is SharinGAN's symmetric idea. Depth maps are the task network's tanh
outputs in [-1, 1] <-> 0..`max_depth` m (80 m, the vKITTI 8000-cm cap).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import kornia
import torch
import torch.nn.functional as F
from torch import Tensor, nn

# ----------------------------------------------------------------------------------------------------------
# Shared adversarial and reconstruction terms
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SharinGANWeights:
    """Weights of the overall loss L = α1 L_adv + α2 L_r + α3 L_T (eq. 2.10).

    Depth: (1, 10, 1); faces: (1, 10, 0.1); λ, the gradient-penalty weight of the critic (eq. 2.3), is 10. The
    values live in the experiment YAML only (`sharingan.weights` of experiments/chapter2/*_base.yaml): no
    defaults here, so a config that lacks one is an error naming it.
    """

    adversarial: float
    reconstruction: float
    task: float
    gradient_penalty: float


def wasserstein_distance(critic_synthetic: Tensor, critic_real: Tensor) -> Tensor:
    """L_W = E[D(G(x_s))] - E[D(G(x_r))] (eq. 2.1), from the critic's scores of the two domains."""
    return critic_synthetic.mean() - critic_real.mean()


def gradient_penalty(critic: nn.Module, synthetic: Tensor, real: Tensor) -> Tensor:
    """WGAN-GP penalty E[(||∇_ĥ D(ĥ)||_2 - 1)^2] (eq. 2.2) on ĥ = s + α (r - s), α ~ U(0, 1) per sample.

    The norm is over all of a sample's pixels and channels; `create_graph=True` so the critic's update
    differentiates through it. Inputs are detached: the penalty only trains the critic.
    """
    if synthetic.shape != real.shape:
        raise ValueError(f"gradient penalty needs equal shapes, got synthetic {tuple(synthetic.shape)} "
                         f"and real {tuple(real.shape)}")
    alpha = torch.rand((synthetic.shape[0],) + (1,) * (synthetic.dim() - 1), device=synthetic.device,
                       dtype=synthetic.dtype)
    interpolated = (synthetic.detach() + alpha * (real.detach() - synthetic.detach())).requires_grad_(True)
    scores = critic(interpolated)
    (gradients,) = torch.autograd.grad(scores.sum(), interpolated, create_graph=True)
    norms = gradients.flatten(1).norm(2, dim=1)
    return ((norms - 1.0) ** 2).mean()


def critic_loss(critic: nn.Module, shared_synthetic: Tensor, shared_real: Tensor,
                gradient_penalty_weight: float) -> tuple[Tensor, dict[str, Tensor]]:
    """What the critic minimises: -L_adv = -(L_W - λ L_gp) (eq. 2.3), λ = `sharingan.weights.gradient_penalty`.

    = mean D(G(x_r)) - mean D(G(x_s)) + λ GP; the generator outputs are detached (the critic step never
    updates G).
    """
    shared_synthetic, shared_real = shared_synthetic.detach(), shared_real.detach()
    distance = wasserstein_distance(critic(shared_synthetic), critic(shared_real))
    penalty = gradient_penalty(critic, shared_synthetic, shared_real)
    loss = -distance + gradient_penalty_weight * penalty
    return loss, {"critic/wasserstein": distance.detach(), "critic/gradient_penalty": penalty.detach(),
                  "critic/loss": loss.detach()}


def generator_adversarial_loss(critic: nn.Module, shared_synthetic: Tensor, shared_real: Tensor) -> Tensor:
    """G's adversarial term L_W = mean D(G(x_s)) - mean D(G(x_r)) (eq. 2.3 with λ = 0 for G).

    Gradients flow into G through *both* domains: synthetic scores are pushed down and real scores up.
    """
    return wasserstein_distance(critic(shared_synthetic), critic(shared_real))


def reconstruction_loss(shared: Tensor, original: Tensor) -> Tensor:
    """One domain's term of L_r = ||G(x_s) - x_s||² + ||G(x_r) - x_r||² (eq. 2.4), as a pixel mean (MSE).

    The official code uses nn.MSELoss per domain and sums the two domains.
    """
    if shared.shape != original.shape:
        raise ValueError(f"reconstruction loss: generator output {tuple(shared.shape)} differs from its input "
                         f"{tuple(original.shape)}")
    return F.mse_loss(shared, original)


# ----------------------------------------------------------------------------------------------------------
# Monocular depth (eqs. 2.5-2.8)
# ----------------------------------------------------------------------------------------------------------


def scale_pyramid(image: Tensor, num_scales: int = 4) -> list[Tensor]:
    """Coarse-to-fine pyramid (1/8, 1/4, 1/2, 1 for 4 scales): bilinear, align_corners=True (official)."""
    height, width = image.shape[-2:]
    pyramid = []
    for level in range(num_scales - 1, 0, -1):
        size = (max(height // 2**level, 1), max(width // 2**level, 1))
        pyramid.append(F.interpolate(image, size=size, mode="bilinear", align_corners=True))
    pyramid.append(image)
    return pyramid


def multiscale_l1_loss(predictions: Sequence[Tensor], target: Tensor) -> Tensor:
    """L_1 = ||ŷ_s - y_s*||_1 (eq. 2.5), summed (unweighted) over the task network's scales.

    `predictions` is coarse-to-fine; the target is resized to each scale with `scale_pyramid`.
    """
    targets = scale_pyramid(target, len(predictions))
    return sum(F.l1_loss(prediction, label) for prediction, label in zip(predictions, targets, strict=True))


def _gradients(image: Tensor) -> tuple[Tensor, Tensor]:
    """x and y first derivatives (kornia central differences, replicated border)."""
    gradient = kornia.filters.spatial_gradient(image, mode="diff", normalized=True)
    return gradient[:, :, 0], gradient[:, :, 1]


def edge_aware_smoothness(depths: Sequence[Tensor], image: Tensor) -> Tensor:
    """L_DS = e^{-|∇x_r|} |∇ŷ_r| (eq. 2.6), over the scales (coarse-to-fine), scale i weighted 1/2^i.

    The edge weights come from the *original* real image (mean absolute gradient over channels), as in the
    official `get_smooth_weight`; i = 0 is the coarsest scale, as coded there.
    """
    images = scale_pyramid(image, len(depths))
    total = image.new_zeros(())
    for level, (depth, picture) in enumerate(zip(depths, images, strict=True)):
        depth_dx, depth_dy = _gradients(depth)
        image_dx, image_dy = _gradients(picture)
        weight_x = torch.exp(-image_dx.abs().mean(1, keepdim=True))
        weight_y = torch.exp(-image_dy.abs().mean(1, keepdim=True))
        total = total + ((depth_dx * weight_x).abs().mean() + (depth_dy * weight_y).abs().mean()) / 2**level
    return total


def warp_right_to_left(right: Tensor, disparity: Tensor) -> Tensor:
    """Inverse-warp the right image into the left view: Î_l(x, y) = I_r(x - d(x, y), y) (d in pixels).

    Bilinear along x (kornia `remap`), zero outside the image, so out-of-view samples fade to 0 as in the
    official Monodepth sampler. `disparity` is (B, 1, H, W) or (B, H, W).
    """
    if disparity.dim() == 4:
        disparity = disparity[:, 0]
    batch, _, height, width = right.shape
    if disparity.shape != (batch, height, width):
        raise ValueError(f"disparity {tuple(disparity.shape)} does not match image {tuple(right.shape)}")
    ys, xs = torch.meshgrid(torch.arange(height, device=right.device, dtype=right.dtype),
                            torch.arange(width, device=right.device, dtype=right.dtype), indexing="ij")
    map_x = xs.unsqueeze(0) - disparity
    map_y = ys.unsqueeze(0).expand_as(map_x)
    return kornia.geometry.transform.remap(right, map_x, map_y, mode="bilinear", padding_mode="zeros",
                                           align_corners=True)


def photometric_loss(target: Tensor, reconstruction: Tensor, ssim_weight: float = 0.85,
                     l1_weight: float = 0.15) -> Tensor:
    """η (1 - SSIM)/2 + μ |x - x'| with η = 0.85, μ = 0.15 (eq. 2.7), images in [0, 1].

    SSIM from kornia with a 3x3 window (C1 = 0.01², C2 = 0.03²); the (1 - SSIM)/2 map is clamped to [0, 1].
    """
    ssim = kornia.metrics.ssim(target, reconstruction, window_size=3, max_val=1.0, eps=0.0)
    dissimilarity = torch.clamp((1.0 - ssim) / 2.0, 0.0, 1.0)
    return ssim_weight * dissimilarity.mean() + l1_weight * (target - reconstruction).abs().mean()


def depth_from_network(prediction: Tensor, max_depth: float = 80.0) -> Tensor:
    """Metric depth (m) from a tanh output in [-1, 1]: (ŷ + 1) / 2 · max_depth."""
    return (prediction + 1.0) / 2.0 * max_depth


def geometric_consistency_loss(depths: Sequence[Tensor], left: Tensor, right: Tensor, focal_baseline: Tensor,
                               max_depth: float = 80.0) -> Tensor:
    """L_GC (eq. 2.7) summed over scales: left image vs the right image warped with disparity f·B/depth.

    `left`, `right`: original real stereo images in [0, 1] at the network resolution; `focal_baseline`: (B,)
    f·B in pixel·metre at that full width; at scale k (coarse-to-fine, finest = full) it is divided by
    2^(num_scales - 1 - k). Depth = (ŷ + 1)/2 · 80 m; disparity = f·B / (depth + 1e-6).
    """
    lefts, rights = scale_pyramid(left, len(depths)), scale_pyramid(right, len(depths))
    total = left.new_zeros(())
    full_width = left.shape[-1]
    for depth, left_k, right_k in zip(depths, lefts, rights, strict=True):
        scale = right_k.shape[-1] / full_width
        metric = depth_from_network(depth, max_depth)
        disparity = focal_baseline.view(-1, 1, 1, 1).to(metric) * scale / (metric + 1e-6)
        total = total + photometric_loss(left_k, warp_right_to_left(right_k, disparity))
    return total


@dataclass(frozen=True)
class DepthLossWeights:
    """β1 (smoothness) = 0.01, β2 (L1) = β3 (geometric consistency) = 100 (eq. 2.8); 0-80 m depth range."""

    smoothness: float = 0.01
    l1: float = 100.0
    geometric_consistency: float = 100.0
    max_depth: float = 80.0
    pretrain_all_scales: bool = False


class DepthTaskLoss:
    """L_T = β1 L_DS + β2 L_1 + β3 L_GC (eq. 2.8), split by domain for the SharinGAN task interface.

    synthetic: β2 · multi-scale L1 to the vKITTI depth (normalised to [-1, 1]);
    real: β3 · L_GC + β1 · L_DS on KITTI stereo (original images, not G's output);
    pretrain: L1 of the full-resolution output only (the official stage-2 "PTNet" loss), or with
    `pretrain_all_scales` the multi-scale L1 of eq. 2.5 that the end-to-end stage uses (docs/chapter2-depth.md,
    "Pretraining T's coarse outputs": the official choice leaves the three coarse outputs untrained).
    Predictions are the task network's 4 outputs, coarse to fine.
    """

    def __init__(self, weights: DepthLossWeights = DepthLossWeights()) -> None:
        self.weights = weights

    def synthetic(self, predictions: Sequence[Tensor], batch: dict) -> tuple[Tensor, dict[str, Tensor]]:
        l1 = multiscale_l1_loss(predictions, batch["depth"])
        return self.weights.l1 * l1, {"task/l1_synthetic": l1.detach()}

    def real(self, predictions: Sequence[Tensor], batch: dict) -> tuple[Tensor, dict[str, Tensor]]:
        left = (batch["image"] + 1.0) / 2.0
        right = (batch["right"] + 1.0) / 2.0
        geometric = geometric_consistency_loss(predictions, left, right, batch["focal_baseline"],
                                               self.weights.max_depth)
        smooth = edge_aware_smoothness(predictions, batch["image"])
        loss = self.weights.geometric_consistency * geometric + self.weights.smoothness * smooth
        return loss, {"task/geometric_consistency": geometric.detach(), "task/smoothness": smooth.detach()}

    def pretrain(self, predictions: Sequence[Tensor], batch: dict) -> tuple[Tensor, dict[str, Tensor]]:
        l1 = F.l1_loss(predictions[-1], batch["depth"])
        if not self.weights.pretrain_all_scales:
            return l1, {"pretrain/l1_full_resolution": l1.detach()}
        total = multiscale_l1_loss(predictions, batch["depth"])
        return total, {"pretrain/l1_full_resolution": l1.detach(), "pretrain/l1_all_scales": total.detach()}
