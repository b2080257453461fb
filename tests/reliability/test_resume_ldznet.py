"""Exact resume of Chapter-3 training (ldznet.train): a tiny CPU run killed with SIGKILL and resumed with
`resume=last` logs the same losses and learning rates as an uninterrupted run and ends with the same weights,
EMA and optimiser/scheduler states; `last.ckpt` survives a SIGKILL in the middle of a save."""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from common.checkpoints import load_torch
from common.config import load_config
from common.resilience import StepSeededSampler, sample_seed
from common.testing import write_tiny_stable_diffusion
from ldznet.config import model_defaults, optim_defaults
from ldznet.data import EpochStepSampler, NumberedSamples
from ldznet.train import train
from tests.helpers.toy_phrasecut import write_toy_phrasecut

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "experiments" / "chapter3" / "tiny.yaml"

# Runs ldznet.train's CLI and SIGKILLs itself right after the checkpoint of step LDZNET_TEST_KILL_AT is written
# (Lightning calls the callbacks' on_train_batch_end, ModelCheckpoint included, before the module's).
KILL_DRIVER = textwrap.dedent("""
    import os, signal, sys
    from ldznet.lit_module import SegmenterLitModule
    kill_at = int(os.environ["LDZNET_TEST_KILL_AT"])
    def on_train_batch_end(self, *args, **kwargs):
        if self.global_step >= kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
    SegmenterLitModule.on_train_batch_end = on_train_batch_end
    from ldznet.train import main
    sys.exit(main(sys.argv[1:]))
""")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    return {"sd": write_tiny_stable_diffusion(root / "tiny_sd", seed=2),
            "phrasecut": write_toy_phrasecut(root / "VGPhraseCut_v0", samples_per_split=4, size=64)}


def overrides(world, variant="ldznet"):
    # 4 samples, batch 2: an epoch is 2 steps, so the plateau scheduler (patience 0) steps every 2 steps
    return [f"model.variant={variant}", f"model.stable_diffusion.path={world['sd']}",
            f"data.train.root={world['phrasecut']}", f"data.val.root={world['phrasecut']}", "data.val_limit=2",
            "trainer.checkpoint_every_n_steps=1", "optim.plateau_patience=0", "optim.base_learning_rate=2e-3",
            "log_images_every=0", "experiment=resume"]


def scalars(run_dir: Path) -> dict[str, dict[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0}).Reload()
    return {tag: {event.step: event.value for event in events.Scalars(tag)}
            for tag in ("train/loss_step", "train/lr") if tag in events.Tags()["scalars"]}


def run_killed(world, tmp_path, kill_at, variant):
    # the killed run must use this process's intra-op thread count, like the reference and resumed runs below:
    # CPU kernels split their reductions by thread, so the gradients differ in the last bits across counts, and
    # AdamW's normalised update (m / sqrt(v)) turns that into differences of up to one lr step on the tiny
    # model's near-zero gradients
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(torch.get_num_threads()),
           "LDZNET_TEST_KILL_AT": str(kill_at)}
    process = subprocess.run([sys.executable, "-c", KILL_DRIVER, str(TINY), *overrides(world, variant),
                              "trainer.max_steps=1000"], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=300)
    assert process.returncode == -signal.SIGKILL, process.stderr[-3000:]
    (checkpoint,) = (tmp_path / "runs" / "chapter3" / "resume").glob("*/checkpoints/last.ckpt")
    assert load_torch(checkpoint)["global_step"] == kill_at
    return checkpoint


def check_exact_resume(world, tmp_path, kill_at, total, variant="ldznet", lr_halves_at=None):
    killed = run_killed(world, tmp_path, kill_at, variant)
    reference = train(load_config(TINY, overrides(world, variant) + [f"trainer.max_steps={total}"]),
                      root=tmp_path / "reference")
    resumed = train(load_config(TINY, overrides(world, variant) + [f"trainer.max_steps={total}", "resume=last"]),
                    root=tmp_path / "runs")
    assert resumed.parent == killed.parents[2] and resumed != killed.parents[1]  # a new run folder

    expected, got = scalars(reference), scalars(resumed)
    if lr_halves_at is not None:  # the plateau step the test is about does happen in the uninterrupted run
        lr = expected["train/lr"]
        assert lr[lr_halves_at] == pytest.approx(lr[lr_halves_at - 1] / 2), sorted(lr.items())
    assert sorted(got["train/loss_step"]) == list(range(kill_at, total))  # nothing re-run, nothing missing
    for tag in ("train/loss_step", "train/lr"):
        for step, value in got[tag].items():
            assert value == pytest.approx(expected[tag][step], abs=1e-5), (tag, step)

    final_reference = load_torch(reference / "checkpoints" / "last.ckpt")
    final_resumed = load_torch(resumed / "checkpoints" / "last.ckpt")
    assert final_resumed["global_step"] == final_reference["global_step"] == total
    for name, value in final_reference["state_dict"].items():
        assert torch.allclose(final_resumed["state_dict"][name], value, atol=1e-5), name
    for name, value in final_reference["ema_state_dict"]["shadow"].items():
        assert torch.allclose(final_resumed["ema_state_dict"]["shadow"][name], value, atol=1e-5), name
    assert final_resumed["ema_state_dict"]["updates"] == total
    plateau_reference, plateau_resumed = (c["lr_schedulers"][0] for c in (final_reference, final_resumed))
    for key in ("best", "num_bad_epochs", "last_epoch", "_last_lr"):
        assert plateau_resumed[key] == pytest.approx(plateau_reference[key]), key
    adam_reference = final_reference["optimizer_states"][0]["state"]
    adam_resumed = final_resumed["optimizer_states"][0]["state"]
    for index, state in adam_reference.items():
        assert torch.allclose(adam_resumed[index]["exp_avg_sq"], state["exp_avg_sq"], atol=1e-8)
        assert float(adam_resumed[index]["step"]) == float(state["step"])
    assert final_resumed["ldznet_train_state"] == final_reference["ldznet_train_state"]


def test_sigkill_mid_epoch_then_resume_last_matches_uninterrupted_run(world, tmp_path):
    # killed after step 3 (the first batch of epoch 1), resumed to step 6: epoch 1's plateau step uses
    # the epoch-mean loss accumulated before and after the kill
    check_exact_resume(world, tmp_path, kill_at=3, total=6)


@pytest.mark.slow
def test_sigkill_at_epoch_end_then_resume_matches_for_znet(world, tmp_path):
    # killed on the last batch of an epoch (before Lightning's epoch-end hooks): the missed plateau step is
    # taken when the next epoch starts, before its first step logs and uses the learning rate. Here that epoch
    # end is where the uninterrupted run halves the learning rate (checked), so a resumed run that took the
    # step late, or not at all, logs or uses a different one
    check_exact_resume(world, tmp_path, kill_at=4, total=9, variant="znet", lr_halves_at=4)


def test_resume_needs_an_existing_checkpoint(world, tmp_path):
    with pytest.raises(FileNotFoundError, match="no \\*/checkpoints/last.ckpt"):
        train(load_config(TINY, overrides(world) + ["resume=last"]), root=tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="resume checkpoint not found"):
        train(load_config(TINY, overrides(world) + [f"resume={tmp_path / 'missing.ckpt'}"]), root=tmp_path)


def test_epoch_sampler_order_is_a_function_of_seed_and_sample_number(monkeypatch):
    reference = StepSeededSampler(10, seed=7)
    sampler = EpochStepSampler(10, seed=7)
    seen = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        seen += list(sampler)
    assert [number for _, number in seen] == list(range(30))
    assert [index for index, _ in seen] == [reference.index(n) for n in range(30)]
    resumed = EpochStepSampler(10, seed=7, start=13)  # 13 samples consumed: epoch 1 continues at its 4th
    resumed.set_epoch(1)
    assert list(resumed) == seen[13:20]
    resumed.set_epoch(2)
    assert list(resumed) == seen[20:30]
    monkeypatch.setattr(EpochStepSampler, "_shard", staticmethod(lambda: (1, 3)))  # rank 1 of 3
    sharded = EpochStepSampler(10, seed=7, start=16)  # ranks consumed 2 samples each of epoch 1 (10..15)
    sharded.set_epoch(1)
    assert len(sharded) == 3 and list(sharded) == [seen[17]]


def test_sample_randomness_is_seeded_by_sample_number():
    class Random:
        def __len__(self):
            return 4

        def __getitem__(self, index):
            return {"value": torch.rand(()).item(), "prompt": "a cat", "image_id": index}

    dataset = NumberedSamples(Random(), seed=3)
    state = torch.get_rng_state()
    first, again, other = dataset[(2, 5)], dataset[(2, 5)], dataset[(2, 6)]
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is untouched
    assert first == again and first["sample_number"] == 5 and other["value"] != first["value"]
    assert sample_seed(3, 5, stream=0) != sample_seed(3, 5, stream=1)


def test_resume_from_another_variant_is_refused_naming_the_checkpoint(world, tmp_path):
    from ldznet.lit_module import SegmenterLitModule
    from ldznet.stable_diffusion import load_stable_diffusion

    checkpoint = tmp_path / "last.ckpt"
    torch.save({"ldznet_segmenter": {"variant": "znet", "task": "phrasecut"}, "state_dict": {},
                "ldznet_train_state": {"seed": 1729, "next_sample_number": 4}}, checkpoint)
    with pytest.raises(ValueError, match=rf"{checkpoint}.*'znet' variant, not 'ldznet' \(variant mismatch\)"):
        train(load_config(TINY, overrides(world, "ldznet") + [f"resume={checkpoint}"]), root=tmp_path)
    with pytest.raises(ValueError, match=r"'phrasecut' task, not 'aigi' \(task mismatch\)"):
        train(load_config(TINY, overrides(world, "znet") + [f"resume={checkpoint}", "task=aigi"]), root=tmp_path)
    # strict_loading is off (frozen SD weights are not stored), so missing trainable weights are checked
    module = SegmenterLitModule(model_defaults(variant="znet", image_size=64, gradient_checkpointing=False),
                                optim_defaults(), components=load_stable_diffusion(world["sd"], hash_files=False))
    state_dict = {"model." + name: value for name, value in module.model.named_parameters() if value.requires_grad}
    del state_dict["model.head.layers.0.weight"]
    with pytest.raises(ValueError, match=r"lacks 1 trainable weights of this 'znet' model.*head.layers.0.weight"):
        module.on_load_checkpoint({"state_dict": state_dict, "ldznet_segmenter": {"variant": "znet"}})
