"""Divergence guard of SharinGAN training: a non-finite loss stops the run naming the step and the loss term
and leaves the last good checkpoint intact; `divergence_policy=skip` skips such batches (the iteration still
counts, so the step counter and checkpoints stay aligned) and counts them in metrics.json and TensorBoard.
NaNs are injected in-process by wrapping the optimised loss (tests/helpers/nan_injection.py)."""

from __future__ import annotations

import json

import pytest
import torch

from common.checkpoints import load_torch
from common.config import REPO_ROOT, load_config
from common.resilience import DivergenceGuard, NonFiniteLossError
from common.testing import write_depth_fixtures
from sharingan.checkpoints import TRAIN_STATE_KEY
from sharingan.train import main, run_stage
from tests.helpers.nan_injection import nan_in_sharingan

TINY = REPO_ROOT / "experiments" / "chapter2" / "depth_tiny.yaml"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_depth_fixtures(tmp_path_factory.mktemp("depth_data"))


def overrides(data, iterations=3):
    return [*data, f"schedule.train_iterations={iterations}", f"schedule.pretrain_task_iterations={iterations}",
            "schedule.checkpoint_every=1", "schedule.validate_every=100", "logging.image_every=0"]


def finite(state_dict):
    return all(torch.isfinite(value).all() for value in state_dict.values() if value.is_floating_point())


def test_nan_stops_naming_step_and_term_and_keeps_last_good_checkpoint(data, tmp_path, capsys):
    # iteration 2 = global steps 14..20 (5/1/1); the G loss turns NaN
    with pytest.raises(SystemExit) as stopped, pytest.MonkeyPatch.context() as patch:
        nan_in_sharingan(patch, iteration=2, phase="generator")
        main([str(TINY), "--root", str(tmp_path), *overrides(data)])
    assert stopped.value.code == 3
    message = capsys.readouterr().err
    assert "step 14 (iteration 2)" in message and "generator[0]/loss=nan" in message and "task[0]/loss=nan" in message
    assert "divergence_policy=skip" in message
    (run_dir,) = (tmp_path / "chapter2" / "depth_tiny" / "train").iterdir()
    checkpoint = load_torch(run_dir / "checkpoints" / "last.ckpt")  # the last good one: after iteration 1
    assert checkpoint["global_step"] == 14 and checkpoint[TRAIN_STATE_KEY]["iterations"] == 2
    assert finite(checkpoint["state_dict"])
    assert not (run_dir / "checkpoints" / "networks_last.pt").exists()  # nothing exported from a diverged run
    # the first term named is where it started; later ones are counted, not listed
    with pytest.raises(NonFiniteLossError, match=r"step 0 \(iteration 0\): non-finite loss term\(s\) "
                       r"critic\[0\]/loss=nan, critic\[1\]/wasserstein=nan, .* \(\+\d+ more\)"), \
            pytest.MonkeyPatch.context() as patch:
        nan_in_sharingan(patch, iteration=0, phase="critic")
        run_stage(load_config(TINY, overrides(data)), "train", tmp_path / "again")


def test_skip_policy_skips_the_batch_counts_it_and_keeps_steps_aligned(data, tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    nan_in_sharingan(monkeypatch, iteration=1, phase="generator")
    cfg = load_config(TINY, [*overrides(data), "divergence_policy=skip"])
    with pytest.warns(RuntimeWarning, match=r"step 7 \(iteration 1\): non-finite loss"):
        run_dir = run_stage(cfg, "train", tmp_path)["run_dir"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["skipped_batches"] == 1 and metrics["global_steps"] == 3 * 7  # the skipped batch counts
    checkpoint = load_torch(run_dir / "checkpoints" / "last.ckpt")
    assert checkpoint[TRAIN_STATE_KEY] == {"iterations": 3, "skipped_batches": 1, "seed": int(cfg.seed),
                                           "world_size": 1}
    assert finite(checkpoint["state_dict"])
    # the critic's 5 steps of iteration 1 were taken (finite), G's and T's were not: T stepped twice
    task_state = checkpoint["optimizer_states"][2]["state"]
    assert {float(state["step"]) for state in task_state.values()} == {2.0}
    assert {float(state["step"]) for state in checkpoint["optimizer_states"][0]["state"].values()} == {15.0}
    events = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0}).Reload()
    skipped = {event.step: event.value for event in events.Scalars("train/skipped_batches")}
    assert skipped == {0: 0.0, 1: 1.0, 2: 1.0}
    task = {event.step: event.value for event in events.Scalars("train/task/total")}
    assert task.get(1, task[0]) == task[0]  # no new loss at the skipped step (Lightning may repeat the last one)


def test_skip_policy_in_pretraining(data, tmp_path, monkeypatch):
    nan_in_sharingan(monkeypatch, iteration=0, phase="task")  # stage 2 optimises the task network
    cfg = load_config(TINY, [*overrides(data), "divergence_policy=skip"])
    with pytest.warns(RuntimeWarning, match=r"step 0 \(iteration 0\): non-finite loss \(loss=nan\)"):
        run_dir = run_stage(cfg, "pretrain_task", tmp_path)["run_dir"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["skipped_batches"] == 1 and metrics["global_steps"] == 3
    checkpoint = load_torch(run_dir / "checkpoints" / "last.ckpt")
    assert checkpoint[TRAIN_STATE_KEY] == {"iterations": 3, "skipped_batches": 1, "seed": int(cfg.seed),
                                           "world_size": 1}
    assert finite(checkpoint["state_dict"])
    assert {float(state["step"]) for state in checkpoint["optimizer_states"][0]["state"].values()} == {2.0}


def test_unknown_policy_is_refused(data, tmp_path):
    with pytest.raises(ValueError, match="divergence policy must be one of"):
        run_stage(load_config(TINY, [*data, "divergence_policy=ignore"]), "train", tmp_path)


def test_guard_names_step_place_and_term():
    guard = DivergenceGuard("skip")
    assert guard.check({"a": torch.tensor(1.0)}, 3)
    with pytest.warns(RuntimeWarning, match=r"step 4 \(iteration 2\): non-finite loss \(b=inf\)"):
        assert not guard.check({"a": torch.tensor(1.0), "b": torch.tensor(float("inf"))}, 4, "iteration 2")
    assert guard.skipped_steps == 1
