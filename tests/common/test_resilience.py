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
import pytorch_lightning as pl
import torch

from common.checkpoints import load_torch, save_torch
from common.resilience import (
    DivergenceGuard,
    IterationResume,
    NonFiniteLossError,
    StepSeededSampler,
    rng_state,
    sample_seed,
    seed_generators,
    seeded_generators,
    set_rng_state,
)


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


class _Counting(IterationResume, pl.LightningModule):
    TRAIN_STATE_KEY = "toy_train_state"

    def __init__(self, seed: int, policy: str = "stop") -> None:
        super().__init__()
        self.init_resilience(seed, policy)


def test_resilient_module_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    """The mixin's resume state: written under the class's key by on_save_checkpoint, read back by a fresh module
    from a weights_only file; another world size is refused."""
    module = _Counting(seed=11, policy="skip")
    module.iteration, module.guard.skipped_steps = 7, 2
    checkpoint = {}
    module.on_save_checkpoint(checkpoint)
    assert checkpoint == {"toy_train_state": {"iterations": 7, "skipped_batches": 2, "seed": 11, "world_size": 1}}
    save_torch(checkpoint, tmp_path / "state.ckpt")
    fresh = _Counting(seed=11, policy="skip")
    fresh.on_load_checkpoint(load_torch(tmp_path / "state.ckpt"))
    assert (fresh.iteration, fresh.guard.skipped_steps) == (7, 2)
    fresh.on_load_checkpoint({})  # a checkpoint without the state leaves the module as it is
    assert fresh.iteration == 7
    with pytest.raises(ValueError, match=r"written by 4 process\(es\).*this run has 1"):
        fresh.on_load_checkpoint({"toy_train_state": {**checkpoint["toy_train_state"], "world_size": 4}})


def test_step_noise_is_a_function_of_seed_and_position_and_leaves_the_global_generator():
    module = _Counting(seed=5)
    torch.manual_seed(123)
    outside = torch.get_rng_state()
    module.iteration = 3
    with module.iteration_noise():
        first = torch.rand(4)
    assert torch.equal(torch.get_rng_state(), outside)  # the global stream is untouched
    with module.step_noise(3):
        again = torch.rand(4)
    expected = torch.rand(4, generator=torch.Generator().manual_seed(sample_seed(5, 3, stream=1)))
    assert torch.equal(first, again) and torch.equal(first, expected)  # (seed, iteration x 1 + 0) on one process
    with module.step_noise(4):
        assert not torch.equal(torch.rand(4), first)


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


def test_seed_generators_gives_torch_manual_seed_s_cpu_stream_and_seeded_generators_restores_it():
    """The cheap seeding (no lazy CUDA/XPU/MTIA queueing) draws what torch.manual_seed draws on the CPU, so
    runs keep their numbers; seeded_generators leaves the global stream as it found it."""
    for seed in (0, 7, 2**40 + 3):
        torch.manual_seed(seed)
        reference = torch.rand(5), torch.randn(3), torch.randint(0, 1000, (4,))
        torch.manual_seed(999)
        seed_generators(seed)
        drawn = torch.rand(5), torch.randn(3), torch.randint(0, 1000, (4,))
        assert all(torch.equal(a, b) for a, b in zip(reference, drawn))
    torch.manual_seed(11)
    outside = torch.get_rng_state()
    with seeded_generators(42):
        inside = torch.rand(3)
    assert torch.equal(torch.get_rng_state(), outside)
    assert torch.equal(inside, torch.rand(3, generator=torch.Generator().manual_seed(42)))
