"""Divergence guard, RNG state round trip, the resumable data order, and atomic Lightning checkpoints."""

import itertools
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from common.checkpoints import load_torch, save_torch
from common.resilience import DivergenceGuard, NonFiniteLossError, StepSeededSampler, rng_state, set_rng_state


def test_guard_stops_naming_step_and_term():
    guard = DivergenceGuard()
    assert guard.check({"critic": torch.tensor(1.0), "task": 2.0}, step=5)
    with pytest.raises(NonFiniteLossError, match=r"step 7: .*task=nan"):
        guard.check({"critic": torch.tensor(1.0), "task": torch.tensor(float("nan"))}, step=7)


def test_guard_skip_policy_counts():
    guard = DivergenceGuard("skip")
    with pytest.warns(RuntimeWarning, match="skipped"):
        assert not guard.check({"generator": torch.tensor(float("inf"))}, step=1)
    assert guard.skipped_steps == 1
    with pytest.raises(ValueError, match="policy"):
        DivergenceGuard("ignore")


def test_rng_state_survives_a_weights_only_checkpoint(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    save_torch({"rng": rng_state()}, tmp_path / "rng.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(load_torch(tmp_path / "rng.pt")["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_sampler_resumes_exactly_and_covers_each_epoch():
    full = list(itertools.islice(iter(StepSeededSampler(7, seed=11)), 30))
    assert sorted(full[:7]) == list(range(7)) and sorted(full[7:14]) == list(range(7))
    assert full[:7] != full[7:14]  # a new permutation each epoch
    resumed = list(itertools.islice(iter(StepSeededSampler(7, seed=11, start=12)), 18))
    assert resumed == full[12:30]
    assert StepSeededSampler(7, seed=11).index(12) == full[12]


ATOMIC_WRITER = textwrap.dedent("""
    import sys, torch
    from common.resilience import AtomicCheckpointIO
    io, path = AtomicCheckpointIO(), sys.argv[1]
    step = 0
    while True:
        io.save_checkpoint({"step": step, "weights": torch.full((4_000_000,), float(step))}, path)
        step += 1
""")


def test_sigkill_during_checkpoint_writes_leaves_a_whole_last_ckpt(tmp_path):
    """AtomicCheckpointIO (used for every run by common.trainer.build_trainer): a kill mid-save keeps a whole file."""
    path = tmp_path / "last.ckpt"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-c", ATOMIC_WRITER, str(path)], env=env)
    try:
        deadline = time.monotonic() + 120
        while not path.exists() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        time.sleep(0.3)  # the writer spends nearly all its time inside a 16 MB save
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    checkpoint = load_torch(path)  # a whole file: either the previous or the new checkpoint
    assert torch.equal(checkpoint["weights"], torch.full((4_000_000,), float(checkpoint["step"])))
