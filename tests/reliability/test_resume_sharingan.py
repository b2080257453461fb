"""Exact resume of SharinGAN training (sharingan.train): a tiny CPU run killed with SIGKILL after a checkpoint
and resumed with `resume=last` logs the same losses as an uninterrupted run (within 1e-5) and ends with the
same weights and optimiser states (critic, G and T Adam), for depth (default) and faces (slow), and for the
pretraining stages; plus the pieces: the seeded data order, per-sample randomness and atomic `last.ckpt`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from common.checkpoints import load_torch, save_torch
from common.config import REPO_ROOT, load_config
from common.resilience import SeededSamples, StepSeededSampler
from common.testing import write_depth_fixtures
from sharingan.checkpoints import TRAIN_STATE_KEY, save_networks
from sharingan.data.loaders import ShardedStepSampler, resumable_loader
from sharingan.train import run_stage

DEPTH_TINY = REPO_ROOT / "experiments" / "chapter2" / "depth_tiny.yaml"
FACES_TINY = REPO_ROOT / "experiments" / "chapter2" / "faces_tiny.yaml"

# Runs sharingan.train's CLI and SIGKILLs itself right after the checkpoint of iteration SHARINGAN_TEST_KILL_AT
# is written (Lightning calls the callbacks' on_train_batch_end, ModelCheckpoint included, before the module's).
KILL_DRIVER = textwrap.dedent("""
    import os, signal, sys
    import pytorch_lightning as pl
    kill_at = int(os.environ["SHARINGAN_TEST_KILL_AT"])
    def on_train_batch_end(self, *args, **kwargs):
        if self.iteration >= kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
    pl.LightningModule.on_train_batch_end = on_train_batch_end
    from sharingan.train import main
    main(sys.argv[1:])
""")


@pytest.fixture(scope="module")
def depth_data(tmp_path_factory):
    return write_depth_fixtures(tmp_path_factory.mktemp("depth_data"))


def depth_overrides(data, total):
    return [*data, f"schedule.train_iterations={total}", f"schedule.pretrain_generator_iterations={total}",
            f"schedule.pretrain_task_iterations={total}", "schedule.checkpoint_every=1", "logging.image_every=0",
            "experiment=resume"]


def scalars(run_dir: Path) -> dict[str, dict[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0}).Reload()
    return {tag: {event.step: event.value for event in events.Scalars(tag)}
            for tag in events.Tags()["scalars"] if tag.startswith("train/")}


def run_killed(tiny, overrides, root, stage, kill_at):
    # same intra-op thread count as the in-process reference and resumed runs: CPU kernels split reductions by
    # thread, so other counts change gradients in the last bits, which Adam's normalised step amplifies
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": str(torch.get_num_threads()),
           "SHARINGAN_TEST_KILL_AT": str(kill_at)}
    process = subprocess.run([sys.executable, "-c", KILL_DRIVER, str(tiny), "--stage", stage, "--root", str(root),
                              *overrides], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert process.returncode == -signal.SIGKILL, process.stderr[-3000:]
    (checkpoint,) = (root / "chapter2" / "resume" / stage).glob("*/checkpoints/last.ckpt")
    assert load_torch(checkpoint)[TRAIN_STATE_KEY]["iterations"] == kill_at
    return checkpoint


def check_exact_resume(tiny, overrides, tmp_path, stage, kill_at, steps_per_iteration):
    runs = tmp_path / "runs"
    runs.mkdir()
    killed = run_killed(tiny, overrides, runs, stage, kill_at)
    reference = run_stage(load_config(tiny, overrides), stage, tmp_path / "reference")["run_dir"]
    resumed = run_stage(load_config(tiny, [*overrides, "resume=last"]), stage, runs)["run_dir"]
    assert resumed.parent == killed.parents[2] and resumed != killed.parents[1]  # a new run folder

    expected, got = scalars(reference), scalars(resumed)
    assert got and set(got) <= set(expected)
    total = max(max(values) for values in expected.values()) + 1
    for tag, values in got.items():
        assert min(values) >= kill_at, (tag, sorted(values))  # nothing re-run
        for step, value in values.items():
            assert value == pytest.approx(expected[tag][step], abs=1e-5, rel=0), (tag, step)
    loss_tag = max(got, key=lambda tag: len(got[tag]))
    assert sorted(got[loss_tag]) == list(range(kill_at, total))  # nothing missing

    final_reference = load_torch(reference / "checkpoints" / "last.ckpt")
    final_resumed = load_torch(resumed / "checkpoints" / "last.ckpt")
    assert final_resumed["global_step"] == final_reference["global_step"] == total * steps_per_iteration
    for name, value in final_reference["state_dict"].items():
        assert torch.allclose(final_resumed["state_dict"][name], value, atol=1e-5), name
    assert len(final_resumed["optimizer_states"]) == len(final_reference["optimizer_states"])
    for reference_state, resumed_state in zip(final_reference["optimizer_states"], final_resumed["optimizer_states"]):
        for index, state in reference_state["state"].items():
            assert torch.allclose(resumed_state["state"][index]["exp_avg_sq"], state["exp_avg_sq"], atol=1e-8)
            assert float(resumed_state["state"][index]["step"]) == float(state["step"])
    assert final_resumed[TRAIN_STATE_KEY] == final_reference[TRAIN_STATE_KEY]
    best_reference, best_resumed = (json.loads((run / "metrics.json").read_text())["best_validation"]
                                    for run in (reference, resumed))
    assert (best_resumed is None) == (best_reference is None)
    assert best_reference is None or best_resumed == pytest.approx(best_reference, abs=1e-6)
    assert (resumed / "checkpoints" / "networks_best.pt").is_file() == \
        (reference / "checkpoints" / "networks_best.pt").is_file()
    return reference, resumed


def test_depth_sigkill_then_resume_last_matches_uninterrupted_run(depth_data, tmp_path):
    # end to end (5/1/1 = 7 optimiser steps per iteration), KITTI validation every 2 iterations; killed
    # after iteration 3, resumed to 5
    check_exact_resume(DEPTH_TINY, depth_overrides(depth_data, 5), tmp_path, "train", 3, 7)


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["pretrain_generator", "pretrain_task"])
def test_depth_pretraining_stages_resume_exactly(depth_data, tmp_path, stage):
    check_exact_resume(DEPTH_TINY, depth_overrides(depth_data, 4), tmp_path, stage, 2, 1)


@pytest.fixture(scope="module")
def face_overrides(tmp_path_factory):
    from sharingan.data.celeba import write_celeba_fixture
    from sharingan.data.sfsnet_synthetic import write_sfsnet_synthetic_fixture
    from sharingan.tasks import load_task

    root = tmp_path_factory.mktemp("face_data")
    write_sfsnet_synthetic_fixture(root / "synthetic", 12, image_size=64)
    write_celeba_fixture(root / "celeba", counts=(12, 2, 2))
    overrides = [f"data.synthetic_root={root / 'synthetic'}", f"data.celeba_root={root / 'celeba'}",
                 "data.photoface_root=null", "schedule.train_iterations=4", "schedule.checkpoint_every=1",
                 "logging.image_every=0", "experiment=resume"]
    # an (untrained) stage-2 SfSNet checkpoint: the pseudo-labels are made once, beside it, and reused
    cfg = load_config(FACES_TINY, overrides)
    checkpoint = root / "pretrain_task" / "checkpoints" / "networks_last.pt"
    save_networks(checkpoint, cfg, {"task_network": load_task("normals").build_networks(cfg)["task_network"]},
                  "pretrain_task")
    return [*overrides, f"init.task_network={checkpoint}"]


@pytest.mark.slow
def test_faces_sigkill_then_resume_last_matches_uninterrupted_run(face_overrides, tmp_path):
    # 5/3/1 with fresh batches for every G and T step (one loader batch of 5 chunks = 9 optimiser steps)
    check_exact_resume(FACES_TINY, face_overrides, tmp_path, "train", 2, 9)


def test_resume_needs_an_existing_checkpoint(depth_data, tmp_path):
    cfg = load_config(DEPTH_TINY, depth_overrides(depth_data, 2))
    with pytest.raises(FileNotFoundError, match="no \\*/checkpoints/last.ckpt"):
        run_stage(load_config(DEPTH_TINY, [*depth_overrides(depth_data, 2), "resume=last"]), "train", tmp_path)
    with pytest.raises(FileNotFoundError, match="resume checkpoint not found"):
        run_stage(cfg, "train", tmp_path, resume=tmp_path / "missing.ckpt")
    foreign = tmp_path / "foreign.ckpt"
    save_torch({"state_dict": {}, "global_step": 3}, foreign)
    with pytest.raises(ValueError, match="cannot be resumed exactly"):
        run_stage(cfg, "train", tmp_path, resume=foreign)


def test_loader_order_and_sample_randomness_are_functions_of_seed_and_sample_number():
    class Noisy(torch.utils.data.Dataset):
        def __len__(self):
            return 5

        def __getitem__(self, index):
            return {"index": index, "noise": torch.rand(())}

    cfg = load_config(DEPTH_TINY)
    state = torch.get_rng_state()
    batches = [batch for _, batch in zip(range(6), resumable_loader(Noisy(), 2, cfg))]
    assert torch.equal(torch.get_rng_state(), state)  # neither the order nor the samples touch the global RNG
    torch.rand(10)  # whatever the global generator does in between
    resumed = [batch for _, batch in zip(range(3), resumable_loader(Noisy(), 2, cfg, start_batch=3))]
    for expected, got in zip(batches[3:], resumed):
        assert torch.equal(expected["index"], got["index"]) and torch.equal(expected["noise"], got["noise"])
    sampler = StepSeededSampler(5, seed=int(cfg.seed), numbered=True)
    numbers = [number for _, (_, number) in zip(range(12), sampler)]
    assert numbers == list(range(12))
    indices = [index for _, (index, _) in zip(range(12), sampler)]
    assert indices == [StepSeededSampler(5, int(cfg.seed)).index(n) for n in range(12)]
    sharded = ShardedStepSampler(5, int(cfg.seed), start_batch=1, batch_size=2)
    sharded._shard = lambda: (1, 3)  # rank 1 of 3: every rank consumed one batch of 2 (numbers 0..5)
    assert [number for _, (_, number) in zip(range(3), sharded)] == [7, 10, 13]
    samples = SeededSamples(Noisy(), seed=1)
    assert torch.equal(samples[(2, 7)]["noise"], samples[(2, 7)]["noise"])
    assert not torch.equal(samples[(2, 7)]["noise"], samples[(2, 8)]["noise"])
    assert samples[3]["index"] == 3  # plain indices pass through


def test_pipeline_resume_last_reuses_finished_stages_and_resumes_interrupted_ones(tmp_path, monkeypatch):
    from sharingan import train

    calls = []
    monkeypatch.setattr(train, "run_stage", lambda cfg, stage, root, resume=None: calls.append((stage, resume))
                        or {"run_dir": None, "checkpoint": None})
    cfg = load_config(DEPTH_TINY, ["experiment=resume", "resume=last"])
    stage_root = tmp_path / "chapter2" / "resume"
    finished = stage_root / "pretrain_task" / "20260101-000000-000000"
    (finished / "checkpoints").mkdir(parents=True)
    (finished / "checkpoints" / "networks_last.pt").write_bytes(b"x")
    (finished / "metrics.json").write_text(json.dumps({"networks_checkpoint": str(finished / "checkpoints" /
                                                                                  "networks_last.pt")}))
    interrupted = stage_root / "train" / "20260101-000000-000000" / "checkpoints" / "last.ckpt"
    interrupted.parent.mkdir(parents=True)
    interrupted.write_bytes(b"x")
    (stage_root / "train" / "20260102-000000-000000").mkdir()  # a resumed run killed before its first checkpoint

    assert train.run_or_resume(cfg, "pretrain_task", tmp_path)["run_dir"] == finished and calls == []
    train.run_or_resume(cfg, "train", tmp_path)
    train.run_or_resume(cfg, "pretrain_generator", tmp_path)
    assert calls == [("train", interrupted), ("pretrain_generator", None)]
    with pytest.raises(ValueError, match="resume=last only"):
        train.run_or_resume(load_config(DEPTH_TINY, ["resume=/some/last.ckpt"]), "train", tmp_path)


@pytest.mark.parametrize("stage", ["train", "pretrain_generator", "pretrain_task"])
def test_resume_with_another_world_size_is_refused(depth_data, stage):
    """Each rank's data stream is seeded by (iteration, rank, world size): a checkpoint written by 2 processes
    cannot continue exactly in 1, so loading it is refused with a message naming both counts (every stage: they
    share common.resilience.IterationResume)."""
    from sharingan.lit_module import SharinGANModule
    from sharingan.pretrain import GeneratorPretraining, TaskPretraining

    tiny = REPO_ROOT / "experiments/chapter2/depth_tiny.yaml"
    module_class = {"train": SharinGANModule, "pretrain_generator": GeneratorPretraining,
                    "pretrain_task": TaskPretraining}[stage]
    module = module_class(load_config(tiny, depth_overrides(depth_data, 1)))
    state = module.train_state()
    assert state == {"iterations": 0, "skipped_batches": 0, "seed": module.seed, "world_size": 1}
    module.on_load_checkpoint({TRAIN_STATE_KEY: state})  # same world size: accepted
    with pytest.raises(ValueError, match=r"written by 2 process\(es\).*this run has 1"):
        module.on_load_checkpoint({TRAIN_STATE_KEY: dict(state, world_size=2)})
