"""Issue 12 items 7 and 8, issue 13 item 2: the training plan means the same on 1, 2 and 8 devices (length in
samples, lr and EMA rescaled to the global batch), and the evaluation noise is drawn per sample, so the metrics do
not depend on the batch size."""

import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from common.config import load_config
from common.testing import write_tiny_stable_diffusion
from ldznet.config import model_defaults
from ldznet.data import build_dataset
from ldznet.eval import evaluate_segmenter
from ldznet.lit_module import TrainableEMA, training_plan
from ldznet.models import build_segmenter
from ldznet.models.ldm_features import per_sample_noise
from ldznet.stable_diffusion import load_stable_diffusion
from tests.helpers.toy_phrasecut import write_toy_phrasecut

PAPER = load_config("experiments/chapter3/ldznet.yaml", [])


def _paper_plan(devices, accumulation=1, dataset_size=320_000):
    return training_plan(dict(PAPER.optim), int(PAPER.data.batch_size), devices, accumulation,
                         train_samples=int(PAPER.schedule.train_samples), dataset_size=dataset_size)


@pytest.mark.parametrize("devices,global_batch,steps", [(1, 4, 1_200_000), (2, 8, 600_000), (8, 32, 150_000)])
def test_paper_plan_on_1_2_8_devices(devices, global_batch, steps):
    plan = _paper_plan(devices)
    assert plan.global_batch == global_batch and plan.steps == steps
    assert plan.samples == 4_800_000 and plan.epochs == pytest.approx(15.0)  # the same on every device count
    assert plan.learning_rate == pytest.approx(5e-7 * global_batch)  # CompVis scaling: 1.6e-5 on 8 GPUs
    assert plan.learning_rate * plan.steps == pytest.approx(5e-7 * 4_800_000)  # lr x steps: device-independent
    # EMA: 0.9999 per step at global batch 32 -> the same averaging horizon in samples, G / (1 - d)
    assert plan.ema_decay == pytest.approx(0.9999 ** (global_batch / 32), rel=1e-12)
    assert global_batch / -math.log(plan.ema_decay) == pytest.approx(32 / -math.log(0.9999))
    assert plan.line() == (
        f"training plan: global batch {global_batch} (4 per device x {devices} devices x 1 accumulation), "
        f"lr {5e-7 * global_batch:.4g}, {steps} steps = 4800000 samples = 15.00 epochs "
        f"(from schedule.train_samples; reference global batch 32), EMA decay {plan.ema_decay:.6g}/step")


def test_plan_accumulation_counts_like_devices_and_max_steps_fixes_the_steps():
    assert _paper_plan(4, accumulation=2) == training_plan(dict(PAPER.optim), 4, 4, 2, train_samples=4_800_000,
                                                           dataset_size=320_000)
    assert _paper_plan(4, accumulation=2).steps == _paper_plan(8).steps
    odd = training_plan(dict(PAPER.optim), 3, 1, 1, train_samples=10)
    assert odd.steps == 4 and odd.samples == 12 and odd.epochs is None  # ceil: never fewer samples than asked
    fixed = training_plan(dict(PAPER.optim), 4, 2, 1, train_samples=4_800_000, max_steps=7)
    assert fixed.steps == 7 and fixed.samples == 56 and fixed.length_from == "trainer.max_steps"
    with pytest.raises(ValueError, match="schedule.train_samples"):
        training_plan(dict(PAPER.optim), 4, 1, 1)


def test_ema_after_r_small_steps_equals_one_reference_step():
    """k steps at 1/k of the reference global batch shrink the average as one reference step does."""
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    reference, small = TrainableEMA(model, 0.9), TrainableEMA(model, 0.9, batch_ratio=1 / 8)
    reference.reference_updates = small.reference_updates = 1e9  # past the warm-up
    with torch.no_grad():
        model.weight.fill_(1.0)
    reference.update(model)
    for _ in range(8):
        small.update(model)
    assert reference.shadow["weight"][0, 0].item() == pytest.approx(0.1)  # 0.9 x 0 + 0.1 x 1
    assert torch.allclose(small.shadow["weight"], reference.shadow["weight"], rtol=1e-6)
    assert small.reference_updates == pytest.approx(1e9 + 1)
    # batch_ratio 1 keeps LDM's LitEma exactly: decay min(d, (1 + n) / (10 + n)) with n = updates
    with torch.no_grad():
        model.weight.fill_(0.0)
    plain = TrainableEMA(model, 0.9999)
    with torch.no_grad():
        model.weight.fill_(1.0)
    plain.update(model)
    assert plain.shadow["weight"][0, 0].item() == pytest.approx(1 - 2 / 11)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    sd = write_tiny_stable_diffusion(root / "sd", seed=3)
    phrasecut = write_toy_phrasecut(root / "VGPhraseCut_v0", samples_per_split=5, size=64)
    torch.manual_seed(0)
    model = build_segmenter(model_defaults(variant="ldznet", image_size=64, eval_seed=7, gradient_checkpointing=False),
                            load_stable_diffusion(sd, hash_files=False)).eval()
    dataset = build_dataset({"name": "phrasecut", "root": str(phrasecut), "split": "test", "image_size": 64})
    return model, dataset


class Recorder(nn.Module):
    """Keeps the logits the evaluation computes (the wrapped model's noise modules stay reachable)."""

    def __init__(self, model):
        super().__init__()
        self.model, self.logits = model, []
        self.train(model.training)  # evaluate_segmenter restores this mode afterwards

    def forward(self, images, prompts):
        logits = self.model(images, prompts)
        self.logits.append(logits.detach().clone())
        return logits


def _evaluate(model, dataset, batch_size):
    recorder = Recorder(model)
    metrics = evaluate_segmenter(recorder, DataLoader(dataset, batch_size=batch_size), progress=False)
    return metrics, torch.cat(recorder.logits)


def test_evaluation_metrics_do_not_depend_on_the_batch_size(tiny):
    model, dataset = tiny
    assert len(dataset) == 5  # a batch of 4 and a batch of 1
    one, logits_one = _evaluate(model, dataset, 1)
    four, logits_four = _evaluate(model, dataset, 4)
    # per-batch-position noise made these differ by ~6e-5 on this model; float batching effects are ~1e-7
    assert (logits_one - logits_four).abs().max() < 1e-6
    assert one.keys() == four.keys()
    for key in one:
        assert one[key] == pytest.approx(four[key], abs=1e-6), key
    # the check is sensitive: other evaluation noise (another seed) moves the logits far more than that
    encoder, features = model.latent_encoder, model.ldm_features
    encoder.eval_seed = features.eval_noise_seed = 8
    try:
        _, logits_other = _evaluate(model, dataset, 4)
    finally:
        encoder.eval_seed = features.eval_noise_seed = 7
    assert (logits_other - logits_four).abs().max() > 1e-5


def test_each_samples_noise_is_its_own_and_the_two_noises_are_independent(tiny):
    model, _ = tiny
    encoder, features = model.latent_encoder, model.ldm_features
    shape = (3, 4, 8, 8)
    with per_sample_noise(model, [10, 11, 12]):
        posterior = encoder.sample_normal(shape, "posterior", encoder.eval_seed)
        z_t = features.sample_normal(shape, "z_t", features.eval_noise_seed)
    with per_sample_noise(model, [12]):
        alone = features.sample_normal((1, 4, 8, 8), "z_t", features.eval_noise_seed)
    assert not torch.allclose(posterior, z_t)  # different streams: not the same tensor (they were before)
    assert abs(torch.corrcoef(torch.stack([posterior.flatten(), z_t.flatten()]))[0, 1]) < 0.2
    assert torch.equal(alone[0], z_t[2])  # sample 12's noise, whatever batch and position it is in
    assert not torch.equal(z_t[0], z_t[1])
    with per_sample_noise(model, [10, 11, 12], seed=8):  # another seed, other noise
        assert not torch.equal(features.sample_normal(shape, "z_t", 0), z_t)
    assert encoder.noise_keys is None and features.noise_keys is None  # restored after the block
    # training: each sample's t in [300, 500) and noise from (run seed, sample number); the same on any batch
    features.train()
    try:
        z = torch.zeros(2, 4, 8, 8)
        with per_sample_noise(model, [5, 6], seed=1):
            t_pair, noise_pair = features.sample_timesteps_and_noise(z)
        with per_sample_noise(model, [6], seed=1):
            t_one, noise_one = features.sample_timesteps_and_noise(z[:1])
        assert 300 <= int(t_pair.min()) and int(t_pair.max()) < 500
        assert t_one[0] == t_pair[1] and torch.equal(noise_one[0], noise_pair[1])
        with pytest.raises(ValueError, match="needs the run's seed"), per_sample_noise(model, [5, 6]):
            features.sample_timesteps_and_noise(z)
    finally:
        features.eval()
