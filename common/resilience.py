"""Surviving long runs: a divergence guard, RNG state in checkpoints, and a data order that can resume.

- `DivergenceGuard` looks at loss terms the step has already computed (one `isfinite` over a handful of
  scalars, no extra forward pass): a non-finite value stops the run with the step and the term named, before
  anything is written, so the last good checkpoint stays as it is; with `policy="skip"` the step is dropped
  instead and counted.
- `RNGStateCallback` stores the Python, NumPy and torch (CPU and CUDA) generator states in every Lightning
  checkpoint and restores them on resume, in a form `torch.load(weights_only=True)` accepts.
- `StepSeededSampler` gives sample number n the index `permutation(seed + n // N)[n % N]`, so the data order is
  a pure function of (seed, position): a resumed run that starts at the number of samples already consumed
  sees exactly the batches an uninterrupted run would have seen, whatever the DataLoader prefetched.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import torch
from pytorch_lightning.callbacks import Callback
from torch.utils.data import Sampler

POLICIES = ("stop", "skip")


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or infinite."""


class DivergenceGuard:
    """Stop (default) or skip a training step whose loss terms are not all finite."""

    def __init__(self, policy: str = "stop") -> None:
        if policy not in POLICIES:
            raise ValueError(f"divergence policy must be one of {POLICIES}, got {policy!r}")
        self.policy = policy
        self.skipped_steps = 0

    def check(self, terms: Mapping[str, torch.Tensor | float], step: int) -> bool:
        """True when every term is finite; otherwise raise (stop) or count and return False (skip)."""
        if not terms:
            return True
        names = list(terms)
        values = torch.stack([torch.as_tensor(terms[name]).detach().float().sum().cpu() for name in names])
        finite = torch.isfinite(values)
        if bool(finite.all()):
            return True
        bad = ", ".join(f"{name}={values[i].item()}" for i, name in enumerate(names) if not finite[i])
        if self.policy == "skip":
            self.skipped_steps += 1
            warnings.warn(f"step {step}: non-finite loss ({bad}); batch skipped "
                          f"({self.skipped_steps} skipped so far)", RuntimeWarning, stacklevel=2)
            return False
        raise NonFiniteLossError(f"step {step}: non-finite loss term(s) {bad}. Training stopped; the last good "
                                 "checkpoint is intact (resume with resume=last, or set "
                                 "divergence_policy=skip to drop such batches).")


def _numpy_state_to_tensors(state: tuple) -> dict:
    name, keys, position, has_gauss, cached_gaussian = state
    return {"name": name, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "position": int(position),
            "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)}


def _numpy_state_from_tensors(state: dict) -> tuple:
    return (state["name"], state["keys"].numpy().astype(np.uint32), state["position"], state["has_gauss"],
            state["cached_gaussian"])


def rng_state() -> dict:
    """All generator states as plain containers and tensors (safe for weights_only loading)."""
    python_state = random.getstate()
    state = {
        "python": [python_state[0], list(python_state[1]), python_state[2]],
        "numpy": _numpy_state_to_tensors(np.random.get_state()),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np.random.set_state(_numpy_state_from_tensors(state["numpy"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class RNGStateCallback(Callback):
    """Save the generator states into each checkpoint and put them back when training resumes."""

    def state_dict(self) -> dict:
        return rng_state()

    def load_state_dict(self, state_dict: dict) -> None:
        set_rng_state(state_dict)


class StepSeededSampler(Sampler[int]):
    """An endless shuffled order that is a pure function of (seed, sample number); resumable by `start`.

    It has no length: Lightning treats its DataLoader as endless and stops on `max_steps`.
    """

    def __init__(self, length: int, seed: int, start: int = 0) -> None:
        if length <= 0:
            raise ValueError("StepSeededSampler needs a non-empty dataset")
        self.length, self.seed, self.start = int(length), int(seed), int(start)

    def index(self, sample_number: int) -> int:
        epoch, position = divmod(sample_number, self.length)
        generator = torch.Generator().manual_seed(self.seed + epoch)
        return int(torch.randperm(self.length, generator=generator)[position])

    def __iter__(self) -> Iterator[int]:
        sample_number = self.start
        while True:
            epoch, position = divmod(sample_number, self.length)
            order = torch.randperm(self.length, generator=torch.Generator().manual_seed(self.seed + epoch)).tolist()
            yield from order[position:]
            sample_number = (epoch + 1) * self.length


def resolve_resume(resume: str | None, run_root: str | Path) -> Path | None:
    """`resume=last` -> the newest `checkpoints/last.ckpt` under `run_root` (an experiment's run folders);
    a path -> that file (which must exist); None/empty -> start fresh."""
    if not resume:
        return None
    if resume != "last":
        path = Path(resume)
        if not path.is_file():
            raise FileNotFoundError(f"resume checkpoint not found: {path}")
        return path
    candidates = sorted(Path(run_root).glob("*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise FileNotFoundError(f"resume=last: no */checkpoints/last.ckpt under {run_root}")
    return candidates[-1]
