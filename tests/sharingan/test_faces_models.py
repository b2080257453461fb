"""Face networks: parameter counts against the analytic counts of the official layers, shapes, no BN in D."""

import pytest
import torch
from torch import nn

from sharingan.models.face_critic import FaceCritic
from sharingan.models.rbdn import RBDN
from sharingan.models.sfsnet import LIGHTING_DIM, SfSNet


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# Analytic counts (worked out by hand from the layer lists of docs/ref-sharingan.md §1.4-1.6):
# RBDN: 17 conv3x3 128->128 (147,584 + BN 256) + 3 conv3x3 256->128 (295,040 + 256) + stem 3,584 + 256
#       + input BN(3) 6 + output conv 3,459 = 3,406,473.
# Face critic: convs 9,431,840 + linears 2,098,176 + 524,800 + 513 = 12,055,329.
# SfSNet: stem 231,296 + 2 branches x 1,569,539 + light 49,280 + 256 + 3,483 = 3,423,393.
@pytest.mark.parametrize("build, expected", [(RBDN, 3_406_473), (FaceCritic, 12_055_329), (SfSNet, 3_423_393)])
def test_parameter_counts_within_one_percent_of_paper(build, expected):
    got = count(build())
    assert abs(got - expected) / expected < 0.01, (build.__name__, got, expected)


def test_paper_sizes_in_millions():
    assert round(count(RBDN()) / 1e6, 2) == 3.41
    assert round(count(SfSNet()) / 1e6, 2) == 3.42
    assert round(count(FaceCritic()) / 1e6, 2) == 12.06


def test_rbdn_is_linear_at_the_output_and_keeps_size():
    generator = RBDN(width=0.0625).eval()
    assert isinstance(list(generator.modules())[-1], nn.Conv2d)  # no activation after the last conv
    x = torch.rand(2, 3, 32, 48)
    y = generator(x)
    assert y.shape == x.shape
    # A linear head can leave [0, 1] when its bias says so (a tanh / sigmoid could not).
    with torch.no_grad():
        generator.output.bias.fill_(5.0)
    assert generator(x).max() > 1.0
    with pytest.raises(ValueError, match="multiples of 8"):
        generator(torch.rand(1, 3, 30, 32))


def test_face_critic_has_no_batch_norm_and_scores_each_sample():
    critic = FaceCritic(image_size=64, width=0.125)
    assert not any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in critic.modules())
    x = torch.rand(3, 3, 64, 64)
    scores = critic(x)
    assert scores.shape == (3, 1)
    # Per-sample independence (needed by the gradient penalty): a sample's score ignores the others.
    assert torch.allclose(critic(x[:1]), scores[:1], atol=1e-6)
    small = FaceCritic(image_size=32, width=0.125)  # 32 -> 16 -> 8 -> 4 -> 2 -> 1 -> 1
    assert small.classifier[1].in_features == 64 and small(torch.rand(2, 3, 32, 32)).shape == (2, 1)
    with pytest.raises(ValueError, match="expects"):
        critic(torch.rand(1, 3, 128, 128))


def test_sfsnet_outputs_and_width_multiplier():
    network = SfSNet(width=0.125, blocks=1)
    out = network(torch.rand(2, 3, 32, 32))
    assert out["normal"].shape == (2, 3, 32, 32) and out["albedo"].shape == (2, 3, 32, 32)
    assert out["lighting"].shape == (2, LIGHTING_DIM)
    assert count(network) < count(SfSNet()) / 20
    with pytest.raises(ValueError, match="even"):
        network(torch.rand(1, 3, 31, 32))


@pytest.mark.slow
def test_paper_size_networks_run_a_training_step_at_128():
    """Full-width RBDN -> SfSNet and the critic at 128x128 (the critic's 2048-wide flatten needs 128)."""
    from common.config import load_config
    from sharingan.face_losses import SfSWeights, sfs_supervision
    from sharingan.losses import critic_loss

    generator, critic, task_network = RBDN(), FaceCritic(), SfSNet()
    image = torch.rand(2, 3, 128, 128)
    shared = generator(image)
    prediction = task_network(shared)
    target = {"normal": torch.rand(2, 3, 128, 128), "albedo": torch.rand(2, 3, 128, 128),
              "lighting": torch.rand(2, 27), "mask": torch.ones(2, 1, 128, 128)}
    weights = SfSWeights(**load_config("experiments/chapter2/faces_base.yaml").sfs_weights)
    loss = sfs_supervision(prediction, target, image, weights)["total"]
    loss.backward()
    assert generator.output.weight.grad is not None and torch.isfinite(loss)
    value, _ = critic_loss(critic, shared[:1], shared[1:], 10.0)
    value.backward()
    assert critic.classifier[1].in_features == 2048
