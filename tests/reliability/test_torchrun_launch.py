"""The README's multi-node recipe on the CPU: the same entry point (`python -m sharingan.train`) launched by
`torchrun --nproc-per-node 2` (Lightning's TorchElastic environment, gloo) trains, writes one run folder (rank
0's) with one `last.ckpt`, and a second torchrun launch with `resume=last` continues that checkpoint exactly
where it stopped (step count and data position)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from common.checkpoints import load_torch
from common.config import REPO_ROOT
from common.testing import write_depth_fixtures
from sharingan.checkpoints import TRAIN_STATE_KEY

DEPTH_TINY = REPO_ROOT / "experiments" / "chapter2" / "depth_tiny.yaml"
STEPS_PER_ITERATION = 7  # depth: 5 critic + 1 generator + 1 task optimiser steps


def torchrun(arguments: list[str], cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "SLURM_PROCID", "SLURM_NTASKS"):
        env.pop(name, None)
    started = time.perf_counter()
    process = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                              "-m", "sharingan.train", *arguments], cwd=cwd, env=env, capture_output=True,
                             text=True, timeout=600)
    print(f"torchrun: {time.perf_counter() - started:.1f} s")
    assert process.returncode == 0, process.stdout[-2000:] + process.stderr[-4000:]
    return process


@pytest.mark.slow
def test_torchrun_two_processes_one_run_folder_and_resume(tmp_path):
    data = write_depth_fixtures(tmp_path / "data")
    root = tmp_path / "runs"
    common = [str(DEPTH_TINY), "--root", str(root), *data, "trainer.accelerator=cpu", "trainer.devices=2",
              "logging.image_every=0", "schedule.checkpoint_every=1", "eval.validate=false", "experiment=launch"]
    first = torchrun([*common, "schedule.train_iterations=1"], tmp_path)
    assert first.stdout.count("train: run folder") == 1  # printed by rank 0 only
    stage_root = root / "chapter2" / "launch" / "train"
    (run,) = list(stage_root.iterdir())  # one run folder for both ranks
    assert sorted(path.name for path in (run / "checkpoints").iterdir()) == ["last.ckpt", "networks_last.pt"]
    checkpoint = load_torch(run / "checkpoints" / "last.ckpt")
    assert checkpoint["global_step"] == STEPS_PER_ITERATION
    assert checkpoint[TRAIN_STATE_KEY]["iterations"] == 1

    torchrun([*common, "schedule.train_iterations=2", "resume=last"], tmp_path)
    resumed = sorted(path for path in stage_root.iterdir() if path != run)
    assert len(resumed) == 1
    checkpoint = load_torch(resumed[0] / "checkpoints" / "last.ckpt")
    assert checkpoint["global_step"] == 2 * STEPS_PER_ITERATION
    assert checkpoint[TRAIN_STATE_KEY]["iterations"] == 2
    assert str(run / "checkpoints" / "last.ckpt") in (resumed[0] / "config.yaml").read_text()
