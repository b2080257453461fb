"""Test-only NaN injection for the divergence-guard tests (tests/reliability/test_divergence_*.py).

Production modules carry no hook for this: `wrap_loss` replaces, through pytest's `monkeypatch` (undone after
the test), the method through which a training module's loss passes on its way to the optimiser, and
multiplies that loss by NaN when a condition on the module holds. The guard then sees a NaN exactly where a real
divergence would put one (the optimised value itself, before its backward pass). One rule for every module:

- `nan_in_sharingan(monkeypatch, iteration, phase)`: Chapter 2, every stage; `phase` names the network whose loss
  turns NaN in that iteration. End-to-end stage: every `critic[k]`, `generator[k]` or `task[k]` optimiser step of
  the phase (`SharinGANModule._optimise`, which every step goes through). Pretraining: stage 1 optimises the
  generator (`GeneratorPretraining.loss`), stage 2 the task network (`TaskPretraining.loss`), so phase
  `generator` / `task` poisons that stage's loss; there is no critic step there.
- `nan_in_ldznet(monkeypatch, step)`: Chapter 3, the BCE of training step `step` (`SegmenterLitModule._loss`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

PHASES = ("critic", "generator", "task")


def wrap_loss(monkeypatch, owner: type, method: str, condition: Callable[[Any, tuple], bool],
              argument: int | None = None) -> None:
    """Replace `owner.method` by a wrapper that multiplies the loss by NaN when `condition(module, args)` holds.

    The loss is the positional argument number `argument` of the call (changed before the call), or, when
    `argument` is None, the first item of the tuple the method returns."""
    original = getattr(owner, method)

    def poisoned(self, *args, **kwargs):
        if argument is not None:
            if condition(self, args):
                args = (*args[:argument], args[argument] * float("nan"), *args[argument + 1:])
            return original(self, *args, **kwargs)
        result = original(self, *args, **kwargs)
        if condition(self, args):
            result = (result[0] * float("nan"), *result[1:])
        return result

    monkeypatch.setattr(owner, method, poisoned)


def nan_in_sharingan(monkeypatch, iteration: int, phase: str) -> None:
    """The `phase` loss of SharinGAN iteration `iteration` becomes NaN (every stage; see the module docstring)."""
    from sharingan.lit_module import SharinGANModule
    from sharingan.pretrain import GeneratorPretraining, TaskPretraining

    if phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
    # SharinGANModule._optimise(optimizer, loss, label, terms, pending): label "critic[0]", "generator[2]", ...
    wrap_loss(monkeypatch, SharinGANModule, "_optimise",
              lambda module, args: module.iteration == iteration and args[2].startswith(f"{phase}["), argument=1)
    pretraining = {"generator": GeneratorPretraining, "task": TaskPretraining}.get(phase)
    if pretraining is not None:  # loss(batch, batch_index) -> (loss, logged)
        wrap_loss(monkeypatch, pretraining, "loss", lambda module, args: module.iteration == iteration)


def nan_in_ldznet(monkeypatch, step: int) -> None:
    """The training loss of LD-ZNet global step `step` becomes NaN (validation losses stay as they are)."""
    from ldznet.lit_module import SegmenterLitModule

    # SegmenterLitModule._loss(batch) -> (loss, logits)
    wrap_loss(monkeypatch, SegmenterLitModule, "_loss",
              lambda module, args: module.training and module.global_step == step)
