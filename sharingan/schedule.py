"""SharinGAN's step schedule read from the config (dissertation §2.3.1.2; docs/ref-sharingan.md §5).

How many critic / generator / task optimiser steps one end-to-end iteration makes (`sharingan.steps`), how many
chunks one loader batch holds when every generator and task step gets a fresh batch, how such a batch is split,
and the Adam settings of each network. The engine (`sharingan.lit_module`) and the task modules' data modules
(`sharingan.tasks.*`) both read these, so they live here rather than in the engine.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig
from torch import Tensor


def adam_settings(cfg: DictConfig, network: str) -> dict[str, Any]:
    """Adam lr/betas for `network` ("generator", "critic", "task_network") in the end-to-end stage.

    `optim.values` picks `effective` (what the official code really ran with: G 5e-5 (0.5, 0.9), T 1e-4
    (0.95, 0.999), D 1e-5 (0.9, 0.999), because loading the pretrained optimiser states restores their
    param groups) or `nominal` (the 1e-5 everywhere written in the code and §2.3.1.2).
    """
    choice = str(cfg.optim.get("values", "effective"))
    if choice not in ("effective", "nominal"):
        raise ValueError(f"config key optim.values must be 'effective' or 'nominal', got {choice!r}")
    node = cfg.optim[choice][network]
    return {"lr": float(node.lr), "betas": tuple(float(b) for b in node.betas),
            "weight_decay": float(node.get("weight_decay", 0.0))}


def step_counts(cfg: DictConfig) -> tuple[int, int, int]:
    """(critic, generator, task) optimiser steps per iteration from `sharingan.steps` (5/1/1 depth, 5/3/1 faces)."""
    steps = cfg.sharingan.steps
    counts = int(steps.critic), int(steps.generator), int(steps.task)
    if min(counts) < 0 or counts[2] < 1:
        raise ValueError(f"sharingan.steps must be non-negative with at least one task step, got {counts}")
    return counts


def optimizer_steps_per_iteration(cfg: DictConfig) -> int:
    """Lightning global steps per iteration (every optimiser step counts): all three kinds, or the task's alone
    when SharinGAN is switched off."""
    critic, generator, task = step_counts(cfg)
    return critic + generator + task if cfg.sharingan.use_sharingan else task


def batch_chunks(cfg: DictConfig) -> int:
    """How many equal chunks one loader batch holds: 1, or 1 + G steps + T steps for fresh batches."""
    if not cfg.sharingan.get("fresh_batch_per_step", False) or not cfg.sharingan.use_sharingan:
        return 1
    _, generator, task = step_counts(cfg)
    return 1 + generator + task


def split_batch(batch: Any, chunks: int) -> list[Any]:
    """Split every tensor of a (nested) batch into `chunks` equal parts along dimension 0."""
    if chunks == 1:
        return [batch]
    if isinstance(batch, Tensor):
        if batch.shape[0] % chunks:
            raise ValueError(f"batch of {batch.shape[0]} cannot be split into {chunks} equal chunks "
                             "(set the loader batch size to chunks x per-step batch size)")
        return list(batch.chunk(chunks))
    if isinstance(batch, Mapping):
        parts = {key: split_batch(value, chunks) for key, value in batch.items()}
        return [{key: value[index] for key, value in parts.items()} for index in range(chunks)]
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], str):
        size = len(batch) // chunks
        return [list(batch[index * size:(index + 1) * size]) for index in range(chunks)]
    return [batch] * chunks
