"""Networks of the depth task: paper parameter counts (docs/ref-sharingan.md §1.7), shapes, ranges."""

from __future__ import annotations

import pytest
import torch

from sharingan.models.critic import ImageCritic
from sharingan.models.depth_network import DepthUNet
from sharingan.models.generator import ResNetGenerator
from sharingan.summary import main as summary_main
from sharingan.summary import parameter_count

PAPER_COUNTS = {"generator": 3.12e6, "task_network": 54.56e6, "critic": 19.93e6}


@pytest.mark.parametrize(("name", "build"), [("generator", ResNetGenerator), ("task_network", DepthUNet),
                                             ("critic", ImageCritic)])
def test_paper_parameter_counts_within_one_percent(name, build):
    count = parameter_count(build())
    assert abs(count - PAPER_COUNTS[name]) / PAPER_COUNTS[name] < 0.01, (name, count)


def test_summary_cli_prints_one_line_per_network(capsys):
    counts = summary_main(["--task", "depth"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines == [f"{name}: {count}" for name, count in counts.items()]
    assert set(counts) == {"generator", "critic", "task_network"}
    assert abs(counts["task_network"] - 54.56e6) / 54.56e6 < 0.01


def test_generator_keeps_size_and_tanh_range():
    torch.manual_seed(0)
    generator = ResNetGenerator(width=0.125).eval()
    x = torch.rand(2, 3, 32, 64) * 2 - 1
    y = generator(x)
    assert y.shape == x.shape
    assert y.abs().max() <= 1.0


def test_generator_rejects_sizes_not_divisible_by_four():
    with pytest.raises(ValueError, match="divisible by 4"):
        ResNetGenerator(width=0.125)(torch.zeros(1, 3, 30, 64))


def test_depth_network_four_tanh_outputs_coarse_to_fine():
    network = DepthUNet(width=0.0625).eval()
    outputs = network(torch.rand(2, 3, 32, 64))
    assert [tuple(o.shape) for o in outputs] == [(2, 1, 4, 8), (2, 1, 8, 16), (2, 1, 16, 32), (2, 1, 32, 64)]
    assert all(o.abs().max() <= 1.0 for o in outputs)


def test_depth_network_skips_are_scaled():
    """The skip weights are 0.1, 0.05, 0.01: with skip_weight 0 the encoder skips do not reach the output."""
    torch.manual_seed(0)
    network = DepthUNet(width=0.0625).eval()
    x = torch.rand(1, 3, 32, 64)
    reference = network(x)[-1]
    network.skip_weight = 0.0
    assert not torch.allclose(network(x)[-1], reference)


@pytest.mark.parametrize("size", [(32, 64), (64, 96), (192, 640)])
def test_critic_accepts_any_input_size(size):
    critic = ImageCritic(width=0.0625).eval()
    assert critic(torch.rand(2, 3, *size)).shape == (2,)


def test_critic_official_geometry_pool_is_identity_at_192x640():
    critic = ImageCritic(width=0.0625)
    features = critic.features(torch.rand(2, 3, 192, 640))
    assert features.shape[-2:] == (2, 5)
    assert torch.equal(critic.pool(features), features)
    assert critic.head[0].in_features == 32 * 2 * 5  # 512 * width * 2 * 5


@pytest.mark.slow
def test_paper_size_networks_at_192x640():
    """The official geometry end to end: G keeps 192x640, D's last map is 2x5 (Linear 5120), T's 4 outputs."""
    torch.manual_seed(0)
    x = torch.rand(2, 3, 192, 640) * 2 - 1
    generator, critic, task_network = ResNetGenerator(), ImageCritic(), DepthUNet()
    shared = generator(x)
    assert shared.shape == x.shape
    assert critic.features(shared).shape == (2, 512, 2, 5) and critic.head[0].in_features == 5120
    assert critic(shared).shape == (2,)
    outputs = task_network(shared)
    assert [tuple(o.shape[-2:]) for o in outputs] == [(24, 80), (48, 160), (96, 320), (192, 640)]
