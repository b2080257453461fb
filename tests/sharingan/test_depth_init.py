"""Initial weights of the depth networks as in the official code (docs/ref-sharingan.md §1.1-1.3):
G and T: Kaiming-normal (fan_in, gain √2) conv / transposed-conv / linear weights, zero biases, BatchNorm2d
scales ~U(0.02, 1) and shifts 0; the critic: PyTorch 0.4.1 defaults (BN scales ~U(0, 1)).
The expected statistics are worked out from the distributions, not read back from the code."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from sharingan.models.critic import ImageCritic
from sharingan.models.depth_network import DepthUNet
from sharingan.models.generator import ResNetGenerator


def fan_in(weight: torch.Tensor) -> int:
    """PyTorch's fan_in: dimension 1 times the kernel area (for a transposed conv: out_channels x k x k)."""
    return weight.shape[1] * int(np.prod(weight.shape[2:])) if weight.dim() > 2 else weight.shape[1]


def layers(network: nn.Module, kinds) -> list[nn.Module]:
    return [module for module in network.modules() if isinstance(module, kinds)]


@pytest.fixture(scope="module")
def networks():
    torch.manual_seed(0)
    return {"generator": ResNetGenerator(width=0.5), "task_network": DepthUNet(width=0.25)}


@pytest.mark.parametrize("name", ["generator", "task_network"])
def test_conv_weights_are_kaiming_normal_with_zero_biases(networks, name):
    convs = layers(networks[name], (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))
    assert any(isinstance(c, nn.ConvTranspose2d) for c in convs)
    for conv in convs:
        weight = conv.weight.detach().double()
        expected = math.sqrt(2.0 / fan_in(weight))
        # the sample std of n normal draws has relative standard error 1/sqrt(2n): allow 5 of them
        tolerance = 5.0 / math.sqrt(2.0 * weight.numel())
        assert abs(weight.std().item() / expected - 1.0) < tolerance, (conv, weight.std().item(), expected)
        assert abs(weight.mean().item()) < 5.0 * expected / math.sqrt(weight.numel())
        if conv.bias is not None:
            assert torch.count_nonzero(conv.bias).item() == 0, conv
    # one large layer pins it tightly: T's first inception fuse conv (3*128 -> 128, 3x3), 442k weights
    fuse = networks["task_network"].center[0].fuse[1].weight.detach().double() if name == "task_network" else None
    if fuse is not None:
        assert fuse.numel() > 400_000
        assert fuse.std().item() == pytest.approx(math.sqrt(2.0 / (384 * 9)), rel=0.01)
        # normal, not uniform: kurtosis 3 (a uniform has 1.8)
        centred = fuse - fuse.mean()
        assert (centred**4).mean().item() / (centred**2).mean().item() ** 2 == pytest.approx(3.0, abs=0.05)


@pytest.mark.parametrize("name", ["generator", "task_network"])
def test_batch_norm_scales_are_uniform_between_0_02_and_1(networks, name):
    norms = layers(networks[name], nn.BatchNorm2d)
    scales = torch.cat([norm.weight.detach() for norm in norms]).double()
    assert scales.min().item() >= 0.02 and scales.max().item() <= 1.0
    # U(0.02, 1): mean 0.51, std 0.98 / sqrt(12); allow 5 standard errors of the mean
    assert abs(scales.mean().item() - 0.51) < 5 * (0.98 / math.sqrt(12)) / math.sqrt(scales.numel())
    assert scales.std().item() == pytest.approx(0.98 / math.sqrt(12), rel=0.1)
    assert all(torch.count_nonzero(norm.bias).item() == 0 for norm in norms)
    assert all(float(norm.running_var.mean()) == 1.0 for norm in norms)  # buffers untouched


def test_critic_keeps_pytorch_0_4_defaults():
    torch.manual_seed(0)
    critic = ImageCritic(width=0.25)
    for layer in layers(critic, (nn.Conv2d, nn.Linear)):
        bound = 1.0 / math.sqrt(fan_in(layer.weight))
        weight = layer.weight.detach().double()
        assert weight.abs().max().item() <= bound and layer.bias.abs().max().item() <= bound
        if weight.numel() > 10_000:  # uniform(-b, b): std b / sqrt(3)
            assert weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)
    scales = torch.cat([n.weight.detach() for n in layers(critic, (nn.BatchNorm1d, nn.BatchNorm2d))]).double()
    assert scales.min().item() >= 0.0 and scales.max().item() <= 1.0
    assert abs(scales.mean().item() - 0.5) < 5 * (1 / math.sqrt(12)) / math.sqrt(scales.numel())


def test_initialisation_is_seeded_and_keeps_parameter_counts():
    torch.manual_seed(3)
    first = ResNetGenerator(width=0.125)
    torch.manual_seed(3)
    second = ResNetGenerator(width=0.125)
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)
    assert sum(p.numel() for p in ResNetGenerator().parameters()) == 3121220
