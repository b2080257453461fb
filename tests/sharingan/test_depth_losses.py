"""SharinGAN losses (eqs. 2.1-2.8) against closed forms and hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sharingan.losses import (
    DepthLossWeights,
    DepthTaskLoss,
    SharinGANWeights,
    critic_loss,
    edge_aware_smoothness,
    generator_adversarial_loss,
    geometric_consistency_loss,
    gradient_penalty,
    multiscale_l1_loss,
    photometric_loss,
    reconstruction_loss,
    scale_pyramid,
    warp_right_to_left,
    wasserstein_distance,
)


class LinearCritic(nn.Module):
    """D(x) = <w, x>: its input gradient is w everywhere, so ||∇D|| = ||w|| in closed form."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)

    def forward(self, x):
        return (x * self.weight).flatten(1).sum(1)


class QuadraticCritic(nn.Module):
    """D(x) = 0.5 ||x||²: ∇D(x̂) = x̂, so the penalty depends on where x̂ falls."""

    def forward(self, x):
        return 0.5 * (x**2).flatten(1).sum(1)


def test_gradient_penalty_of_linear_critic_is_closed_form():
    torch.manual_seed(0)
    weight = torch.full((3, 4, 5), 0.1)  # ||w|| = 0.1 * sqrt(60)
    critic = LinearCritic(weight)
    penalty = gradient_penalty(critic, torch.randn(4, 3, 4, 5), torch.randn(4, 3, 4, 5))
    assert penalty.item() == pytest.approx((0.1 * math.sqrt(60) - 1.0) ** 2, rel=1e-6)


def test_gradient_penalty_zero_for_unit_norm_gradient():
    weight = torch.zeros(2, 3, 3)
    weight[0, 0, 0] = 1.0
    assert gradient_penalty(LinearCritic(weight), torch.randn(2, 2, 3, 3), torch.randn(2, 2, 3, 3)).item() == \
        pytest.approx(0.0, abs=1e-12)


def test_gradient_penalty_interpolates_between_domains():
    """With s = r the interpolate is s itself whatever α: penalty = mean (||s|| - 1)²."""
    critic = QuadraticCritic()
    samples = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    expected = ((samples.flatten(1).norm(dim=1) - 1) ** 2).mean()
    assert gradient_penalty(critic, samples, samples.clone()).item() == pytest.approx(expected.item(), rel=1e-9)


def test_gradient_penalty_trains_the_critic():
    critic = LinearCritic(torch.full((1, 2, 2), 0.3))
    gradient_penalty(critic, torch.randn(2, 1, 2, 2), torch.randn(2, 1, 2, 2)).backward()
    # d/dw (||w|| - 1)² = 2 (||w|| - 1) w / ||w||, ||w|| = 0.6
    assert torch.allclose(critic.weight.grad, torch.full((1, 2, 2), 2 * (0.6 - 1) * 0.3 / 0.6), atol=1e-6)


def test_critic_and_generator_objectives_have_opposite_wasserstein_signs():
    weight = torch.full((1, 2, 2), 0.5)  # ||w|| = 1 -> no penalty
    critic = LinearCritic(weight)
    synthetic = torch.ones(2, 1, 2, 2)          # D = 2
    real = torch.zeros(2, 1, 2, 2)              # D = 0
    assert wasserstein_distance(critic(synthetic), critic(real)).item() == pytest.approx(2.0)
    loss, terms = critic_loss(critic, synthetic, real, gradient_penalty_weight=10.0)
    assert loss.item() == pytest.approx(-2.0, abs=1e-6)  # critic minimises mean D(r) - mean D(s) + λ GP
    assert terms["critic/gradient_penalty"].item() == pytest.approx(0.0, abs=1e-10)
    assert generator_adversarial_loss(critic, synthetic, real).item() == pytest.approx(2.0)


def test_generator_adversarial_term_pushes_both_domains():
    critic = LinearCritic(torch.full((1, 2, 2), 0.5))
    synthetic = torch.rand(2, 1, 2, 2, requires_grad=True)
    real = torch.rand(2, 1, 2, 2, requires_grad=True)
    generator_adversarial_loss(critic, synthetic, real).backward()
    assert torch.all(synthetic.grad > 0)  # descending lowers the synthetic score
    assert torch.all(real.grad < 0)       # and raises the real score


def test_critic_loss_does_not_reach_the_generator():
    critic = LinearCritic(torch.full((1, 2, 2), 0.5))
    synthetic = torch.rand(2, 1, 2, 2, requires_grad=True)
    loss, _ = critic_loss(critic, synthetic, torch.rand(2, 1, 2, 2), 10.0)
    loss.backward()
    assert synthetic.grad is None


def test_reconstruction_is_mean_squared_error():
    x = torch.zeros(1, 3, 2, 2)
    assert reconstruction_loss(x + 0.5, x).item() == pytest.approx(0.25)
    with pytest.raises(ValueError, match="differs"):
        reconstruction_loss(torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 4, 4))


def test_scale_pyramid_sizes_coarse_to_fine():
    sizes = [tuple(p.shape[-2:]) for p in scale_pyramid(torch.rand(1, 1, 192, 640))]
    assert sizes == [(24, 80), (48, 160), (96, 320), (192, 640)]


def test_multiscale_l1_sums_the_scales():
    target = torch.zeros(1, 1, 16, 16)
    predictions = [torch.full((1, 1, 2, 2), 1.0), torch.full((1, 1, 4, 4), 0.5), torch.zeros(1, 1, 8, 8),
                   torch.zeros(1, 1, 16, 16)]
    assert multiscale_l1_loss(predictions, target).item() == pytest.approx(1.5)


def test_zero_disparity_warp_is_identity():
    right = torch.rand(2, 3, 6, 9)
    assert torch.allclose(warp_right_to_left(right, torch.zeros(2, 1, 6, 9)), right, atol=1e-6)


@pytest.mark.parametrize("shift", [1, 3])
def test_integer_disparity_shifts_by_that_many_pixels(shift):
    right = torch.rand(1, 3, 5, 12)
    warped = warp_right_to_left(right, torch.full((1, 5, 12), float(shift)))
    assert torch.allclose(warped[..., shift:], right[..., :-shift], atol=1e-6)  # Î(x) = I_r(x - d)
    assert torch.allclose(warped[..., :shift], torch.zeros_like(warped[..., :shift]))  # out of view -> 0


def test_photometric_loss_zero_for_identical_images_and_l1_part():
    image = torch.rand(1, 3, 8, 8)
    assert photometric_loss(image, image).item() == pytest.approx(0.0, abs=1e-6)
    flat = torch.full((1, 1, 8, 8), 0.5, dtype=torch.float64)
    # constant images: SSIM = (2·0.5·0.7 + C1)/(0.5² + 0.7² + C1) with zero variances, L1 = 0.2
    c1 = 0.01**2
    ssim = (2 * 0.5 * 0.7 + c1) / (0.25 + 0.49 + c1)
    expected = 0.85 * (1 - ssim) / 2 + 0.15 * 0.2
    assert photometric_loss(flat, flat + 0.2).item() == pytest.approx(expected, rel=1e-5)


def test_photometric_loss_gradcheck_float64():
    torch.manual_seed(0)
    target = torch.rand(1, 2, 5, 6, dtype=torch.float64)
    reconstruction = (target + 0.3 * torch.rand_like(target)).clamp(0, 1).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda r: photometric_loss(target, r), (reconstruction,), eps=1e-6, atol=1e-5)


def test_warp_gradcheck_float64_through_disparity():
    torch.manual_seed(0)
    right = torch.rand(1, 1, 4, 7, dtype=torch.float64)
    disparity = (1.3 + 0.4 * torch.rand(1, 4, 7, dtype=torch.float64)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda d: warp_right_to_left(right, d), (disparity,), eps=1e-6, atol=1e-5)


def test_smoothness_zero_for_constant_depth_and_edge_aware():
    image = torch.rand(1, 3, 16, 16) * 2 - 1
    depths = [torch.zeros(1, 1, 16 // 2**k, 16 // 2**k) for k in (3, 2, 1, 0)]
    assert edge_aware_smoothness(depths, image).item() == 0.0
    ramp = torch.arange(16.0).view(1, 1, 1, 16).expand(1, 1, 16, 16) / 16
    flat_image = torch.zeros(1, 3, 16, 16)
    edgy_image = torch.zeros(1, 3, 16, 16)
    edgy_image[..., ::2] = 1.0
    only_fine = [torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 8, 8), ramp]
    flat = edge_aware_smoothness(only_fine, flat_image).item()
    # flat image: weights 1; central differences of the ramp: 1/16 inside, 1/32 at the two border columns;
    # y-gradient 0; x and y terms added (official); the finest scale (i = 3) divided by 2^3
    expected = ((14 * (1 / 16) + 2 * (1 / 32)) / 16) / 8
    assert flat == pytest.approx(expected, rel=1e-5)
    assert edge_aware_smoothness(only_fine, edgy_image).item() < flat  # image edges relax the penalty


def _stereo_pair(shift: int, height: int = 16, width: int = 32):
    torch.manual_seed(1)
    right = torch.rand(1, 3, height, width)
    left = torch.zeros_like(right)
    left[..., shift:] = right[..., :-shift]
    return left, right


def test_geometric_consistency_prefers_the_true_depth():
    """Left = right shifted by 2 px at full resolution: depth with f·B/depth = 2 px beats other depths."""
    left, right = _stereo_pair(2)
    focal_baseline = torch.tensor([40.0])  # metres x pixels at full width: true depth = 20 m
    def loss_at(depth_m):
        normalised = depth_m / 80.0 * 2 - 1
        depths = [torch.full((1, 1, 16 // 2**k, 32 // 2**k), normalised) for k in (3, 2, 1, 0)]
        return geometric_consistency_loss(depths, left, right, focal_baseline).item()
    assert loss_at(20.0) < loss_at(10.0)
    assert loss_at(20.0) < loss_at(40.0)


def test_depth_task_loss_weights_of_eq_2_8():
    weights = DepthLossWeights()
    assert (weights.smoothness, weights.l1, weights.geometric_consistency) == (0.01, 100.0, 100.0)
    loss = DepthTaskLoss()
    target = torch.zeros(1, 1, 16, 32)
    predictions = [torch.full((1, 1, 16 // 2**k, 32 // 2**k), 0.1) for k in (3, 2, 1, 0)]
    value, terms = loss.synthetic(predictions, {"depth": target})
    assert value.item() == pytest.approx(100 * 4 * 0.1, rel=1e-5)
    value, terms = loss.pretrain(predictions, {"depth": target})
    assert value.item() == pytest.approx(0.1, rel=1e-5)
    left, right = _stereo_pair(2)
    value, terms = loss.real(predictions, {"image": left * 2 - 1, "right": right * 2 - 1,
                                           "focal_baseline": torch.tensor([40.0])})
    expected = 100 * terms["task/geometric_consistency"] + 0.01 * terms["task/smoothness"]
    assert value.item() == pytest.approx(expected.item(), rel=1e-6)


def test_loss_weights_have_no_defaults_in_code():
    """Issue 14 item 4: λ and α come from `sharingan.weights` of the experiment YAML only."""
    with pytest.raises(TypeError, match="gradient_penalty"):
        SharinGANWeights(adversarial=1.0, reconstruction=10.0, task=1.0)
    with pytest.raises(TypeError, match="gradient_penalty_weight"):
        critic_loss(LinearCritic(torch.ones(1, 2, 2)), torch.rand(2, 1, 2, 2), torch.rand(2, 1, 2, 2))


def test_pretraining_on_all_scales_uses_the_multiscale_l1():
    """`loss.pretrain_all_scales`: stage 2 minimises eq. 2.5 over T's four outputs instead of the official
    full-resolution L1 (docs/chapter2-depth.md, "Pretraining T's coarse outputs")."""
    target = torch.zeros(1, 1, 16, 32)
    predictions = [torch.full((1, 1, 16 // 2**k, 32 // 2**k), value) for k, value in zip((3, 2, 1, 0),
                                                                                        (0.4, 0.3, 0.2, 0.1))]
    official, terms = DepthTaskLoss(DepthLossWeights()).pretrain(predictions, {"depth": target})
    assert official.item() == pytest.approx(0.1, rel=1e-5) and set(terms) == {"pretrain/l1_full_resolution"}
    every_head, terms = DepthTaskLoss(DepthLossWeights(pretrain_all_scales=True)).pretrain(predictions,
                                                                                          {"depth": target})
    assert every_head.item() == pytest.approx(0.4 + 0.3 + 0.2 + 0.1, rel=1e-5)
    assert terms["pretrain/l1_full_resolution"].item() == pytest.approx(0.1, rel=1e-5)
