"""Surviving long runs: a divergence guard, RNG state in checkpoints, and a data order that can resume.

- `DivergenceGuard` looks at loss terms the step has already computed (one `isfinite` over a handful of
  scalars, no extra forward pass): a non-finite value stops the run with the step and the term named, before
  anything is written, so the last good checkpoint stays as it is; with `policy="skip"` the step is dropped
  instead and counted.
- `RNGStateCallback` stores the Python, NumPy and torch (CPU and CUDA) generator states in every Lightning
  checkpoint and restores them on resume, in a form `torch.load(weights_only=True)` accepts.
- `StepSeededSampler` gives sample number n the index `permutation(seed + n // N)[n % N]`, so the data order is
  a pure function of (seed, position): a resumed run that starts at the number of samples already consumed
  sees exactly the batches an uninterrupted run would have seen, whatever the DataLoader prefetched. With
  `numbered=True` it yields (index, sample number) pairs for `SeededSamples`, which draws each sample's own
  randomness (augmentation, the random partner of an unpaired domain) from torch seeded with
  `sample_seed(seed, sample number)`, leaving the global generator untouched.
- `seeded_generators(seed, device)` runs a block (a training step's own noise) with torch's generators seeded,
  restoring their outside state afterwards.
- `AtomicCheckpointIO`: Lightning checkpoints through a temporary file + fsync + rename, so a kill during a
  save leaves the previous `last.ckpt` whole.
- `ResilientModule` (a LightningModule mixin): the seed, the divergence guard, the step's seeded noise, the
  skipped-batch count and the exact-resume state in every Lightning checkpoint, written once for every training
  module (SharinGAN's three stages, LD-ZNet); `IterationResume` adds a data position counted in iterations with
  one data stream per rank (SharinGAN).
"""

from __future__ import annotations

import contextlib
import random
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import Callback
from torch.utils.data import Dataset, Sampler

from common.checkpoints import atomic_write

POLICIES = ("stop", "skip")
MAX_NAMED = 4  # non-finite terms named in a message (in the order given: the first is where it started)


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or infinite."""


class DivergenceGuard:
    """Stop (default) or skip a training step whose loss terms are not all finite."""

    def __init__(self, policy: str = "stop") -> None:
        if policy not in POLICIES:
            raise ValueError(f"divergence policy must be one of {POLICIES}, got {policy!r}")
        self.policy = policy
        self.skipped_steps = 0

    def check(self, terms: Mapping[str, torch.Tensor | float], step: int, where: str = "") -> bool:
        """True when every term is finite; otherwise raise (stop) or count and return False (skip).

        One stacked `isfinite` and one host read over the scalars; `where` (e.g. "iteration 12") is added to
        the message after the step."""
        if not terms:
            return True
        names = list(terms)
        scalars = [torch.as_tensor(terms[name]).detach().float().sum() for name in names]
        device = scalars[0].device
        values = torch.stack([value.to(device) for value in scalars])  # on the device: one host read below
        if bool(torch.isfinite(values).all()):
            return True
        values = values.cpu()
        finite = torch.isfinite(values)
        bad_terms = [f"{name}={values[i].item()}" for i, name in enumerate(names) if not finite[i]]
        bad = ", ".join(bad_terms[:MAX_NAMED]) + (f" (+{len(bad_terms) - MAX_NAMED} more)"
                                                 if len(bad_terms) > MAX_NAMED else "")
        at = f"step {step}" + (f" ({where})" if where else "")
        if self.policy == "skip":
            self.skipped_steps += 1
            warnings.warn(f"{at}: non-finite loss ({bad}); batch skipped "
                          f"({self.skipped_steps} skipped so far)", RuntimeWarning, stacklevel=2)
            return False
        raise NonFiniteLossError(f"{at}: non-finite loss term(s) {bad}. Training stopped; the last good "
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

    It has no length: Lightning treats its DataLoader as endless and stops on `max_steps`. `numbered=True`
    yields (index, sample number) pairs (for `SeededSamples`).
    """

    def __init__(self, length: int, seed: int, start: int = 0, numbered: bool = False) -> None:
        if length <= 0:
            raise ValueError("StepSeededSampler needs a non-empty dataset")
        if start < 0:
            raise ValueError(f"StepSeededSampler start must be >= 0, got {start}")
        self.length, self.seed, self.start, self.numbered = int(length), int(seed), int(start), bool(numbered)

    def index(self, sample_number: int) -> int:
        epoch, position = divmod(sample_number, self.length)
        generator = torch.Generator().manual_seed(self.seed + epoch)
        return int(torch.randperm(self.length, generator=generator)[position])

    def __iter__(self) -> Iterator[Any]:
        sample_number = self.start
        while True:
            epoch, position = divmod(sample_number, self.length)
            order = torch.randperm(self.length, generator=torch.Generator().manual_seed(self.seed + epoch)).tolist()
            if self.numbered:
                base = epoch * self.length
                yield from ((order[k], base + k) for k in range(position, self.length))
            else:
                yield from order[position:]
            sample_number = (epoch + 1) * self.length


SEED_MIX = 0x9E3779B97F4A7C15  # golden-ratio odd constant: spreads (seed, sample number) over the seed space


def sample_seed(seed: int, sample_number: int, stream: int = 0) -> int:
    """A 63-bit seed that is a pure function of (seed, sample number, stream); e.g. stream 0 = data, 1 = noise."""
    value = int(seed) * SEED_MIX + int(sample_number) * 0xBF58476D1CE4E5B9 + int(stream) * 0x94D049BB133111EB
    return value % (2**63 - 1)


class SeededSamples(Dataset):
    """Item (index, sample number) -> `dataset[index]` drawn with torch seeded by `sample_seed(seed, number)`.

    The sample's randomness (augmentation, a random partner sample) then depends on neither DataLoader workers
    nor prefetching nor what ran before, and the global generator is left as it was. Plain integer items are
    passed through unchanged (evaluation, tests).
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed = dataset, int(seed)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str) -> Any:
        if name == "dataset":  # not set yet (unpickling in a worker)
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, item: Any) -> Any:
        if not isinstance(item, tuple):
            return self.dataset[item]
        index, number = item
        with torch.random.fork_rng(devices=[]):
            seed_generators(sample_seed(self.seed, number))
            return self.dataset[index]


def seed_generators(seed: int, cuda_devices: Sequence[int] = ()) -> None:
    """Seed torch's CPU generator and the listed CUDA devices' generators with `seed` (as `torch.manual_seed`
    does for those). Not `torch.manual_seed` itself: it also queues a seeding of every CUDA, MTIA and XPU device,
    each with a formatted stack trace (~1 ms per call on the CPU, ~7 % of a demo Chapter-3 step, which seeds per
    sample), and the generators it seeds beyond these are not restored by a `fork_rng` over these."""
    torch.default_generator.manual_seed(int(seed))
    for index in cuda_devices:
        torch.cuda.default_generators[index].manual_seed(int(seed))


@contextlib.contextmanager
def seeded_generators(seed: int, device: torch.device | str | None = None) -> Iterator[None]:
    """Run the block with torch's CPU (and this CUDA device's) generator seeded with `seed`; the states
    outside the block are restored afterwards."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        seed_generators(seed, devices)
        yield


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoints through a temporary file + fsync + rename: never a truncated `last.ckpt`."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        with atomic_write(path, "wb") as file:
            torch.save(checkpoint, file)

    def load_checkpoint(self, path, *args: Any, weights_only: bool | None = None, **kwargs: Any) -> dict:
        """Resume reads are always `weights_only=True` (a hostile `last.ckpt` cannot run code), whatever
        Lightning or the environment (TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD) would default to."""
        if weights_only is False:
            raise ValueError(f"{type(self).__name__} loads checkpoints with weights_only=True only ({path})")
        return super().load_checkpoint(path, *args, weights_only=True, **kwargs)


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


class ResilientModule:
    """LightningModule mixin (list it before `pl.LightningModule`): what exact resume and the divergence guard
    need, written once.

    `init_resilience(seed, divergence_policy)` from `__init__` sets `seed` and `guard` (`DivergenceGuard`).
    `train_state()` (plain numbers: weights_only loading) goes into every Lightning checkpoint under the class's
    `TRAIN_STATE_KEY` and `load_train_state(state)` gets it back on resume; a module extends both with its data
    position (calling `super()`). `step_noise(number)` seeds the training step's own noise by (seed, number);
    `agreed_terms` makes the guard's verdict the same on every DDP rank; `log_skipped_batches` logs the count
    under policy `skip`.
    """

    TRAIN_STATE_KEY = "train_state"

    def init_resilience(self, seed: int, divergence_policy: str = "stop") -> None:
        self.seed = int(seed)
        self.guard = DivergenceGuard(str(divergence_policy))

    def rank_and_world(self) -> tuple[int, int]:
        """(global rank, world size) of the running trainer; (0, 1) outside one."""
        trainer = self._trainer
        if trainer is None:
            return 0, 1
        return int(trainer.global_rank), int(trainer.world_size)

    def step_noise(self, number: int) -> contextlib.AbstractContextManager:
        """The block runs with torch's generators seeded by (seed, number) on stream 1 (stream 0 is the data's):
        the step's noise is a pure function of its position, so a resumed run draws what an uninterrupted one did."""
        return seeded_generators(sample_seed(self.seed, number, stream=1), self.device)

    def agreed_terms(self, named: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Under DDP, add a NaN term `another_rank/non_finite` when some other rank saw a non-finite loss, so that
        the guard's verdict (stop or skip) is the same on every rank: a lone rank that stops or skips would leave
        the others waiting in the next gradient all-reduce."""
        _, world = self.rank_and_world()
        if world == 1 or not named or not torch.distributed.is_initialized():
            return named
        values = torch.stack([torch.as_tensor(value).detach().float().sum().to(self.device)
                              for value in named.values()])
        finite = torch.isfinite(values).all().float().reshape(1)
        everywhere = finite.clone()
        torch.distributed.all_reduce(everywhere, op=torch.distributed.ReduceOp.MIN)
        if bool(everywhere.item() < 1) and bool(finite.item() == 1):
            named = {**named, "another_rank/non_finite": torch.tensor(float("nan"), device=self.device)}
        return named

    def log_skipped_batches(self, batch_size: int = 1) -> None:
        """`train/skipped_batches` per step (TensorBoard) under policy `skip`."""
        if self.guard.policy == "skip":
            self.log("train/skipped_batches", float(self.guard.skipped_steps), on_step=True, on_epoch=False,
                     batch_size=batch_size)

    def train_state(self) -> dict[str, Any]:
        """What exact resume needs beyond Lightning's own state (plain numbers: weights_only loading)."""
        return {"seed": int(self.seed), "skipped_batches": int(self.guard.skipped_steps)}

    def load_train_state(self, state: Mapping[str, Any]) -> None:
        self.guard.skipped_steps = int(state["skipped_batches"])

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[self.TRAIN_STATE_KEY] = self.train_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get(self.TRAIN_STATE_KEY)
        if state:
            self.load_train_state(state)


class IterationResume(ResilientModule):
    """`ResilientModule` whose data position is `iteration`, the loader batches consumed (skipped ones included),
    with one data stream per rank: rank r of W reads its own shard and draws its step noise from
    (seed, iteration x W + r) (W = 1: the single-device stream). The checkpoint records the world size; a resume
    with another one is refused, since the per-rank streams would not continue."""

    def init_resilience(self, seed: int, divergence_policy: str = "stop") -> None:
        super().init_resilience(seed, divergence_policy)
        self.iteration = 0

    def iteration_noise(self) -> contextlib.AbstractContextManager:
        rank, world = self.rank_and_world()
        return self.step_noise(self.iteration * world + rank)

    def train_state(self) -> dict[str, Any]:
        return {"iterations": int(self.iteration), **super().train_state(), "world_size": self.rank_and_world()[1]}

    def load_train_state(self, state: Mapping[str, Any]) -> None:
        saved_world, world = int(state.get("world_size", 1)), self.rank_and_world()[1]
        if saved_world != world:
            raise ValueError(f"cannot resume: the checkpoint was written by {saved_world} process(es) "
                             f"(devices x nodes), this run has {world}; the per-rank data streams would not "
                             "continue. Resume with the same trainer.devices and trainer.num_nodes")
        super().load_train_state(state)
        self.iteration = int(state["iterations"])
