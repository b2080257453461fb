"""SharinGAN networks checkpoints: writing, reading and rebuilding (as `ldznet/checkpoints.py` for Chapter 3).

A networks checkpoint (`save_networks` / `load_networks`) is a plain dict of state dicts plus the task name,
input size, stage and resolved config, written atomically (common.checkpoints) and read back with
`weights_only=True`; eval and predict rebuild the networks from the stored config and refuse a checkpoint of
another task. Training writes them through the `ExportNetworks` callback: `networks_last.pt` at the end of a
stage and `networks_best.pt` when the monitored validation metric improves. `TRAIN_STATE_KEY` names what the
training modules add to Lightning's own checkpoints for exact resume (common.resilience.IterationResume).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from torch import nn

from common.checkpoints import load_torch, save_torch
from sharingan.tasks import load_task

CHECKPOINT_FORMAT = "sharingan-networks/1"
TRAIN_STATE_KEY = "sharingan_train_state"  # in Lightning checkpoints: data position, skipped batches, seed


def save_networks(path: str | Path, cfg: DictConfig, networks: Mapping[str, nn.Module | None], stage: str,
                  step: int = 0, extra: Mapping[str, Any] | None = None) -> Path:
    """Write the networks' weights with everything needed to rebuild them (atomic, weights-only loadable)."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "task": str(cfg.task),
        "stage": stage,
        "step": int(step),
        "input_size": [int(v) for v in cfg.data.size],
        "use_sharingan": bool(networks.get("generator") is not None),
        "config": OmegaConf.to_yaml(cfg, resolve=True),
        "networks": {name: module.state_dict() for name, module in networks.items() if module is not None},
        "extra": dict(extra or {}),
    }
    save_torch(payload, path)
    return Path(path)


def read_networks_checkpoint(path: str | Path, task: str | None = None) -> dict[str, Any]:
    payload = load_torch(path)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a SharinGAN networks checkpoint (expected format {CHECKPOINT_FORMAT!r}; "
                         "Lightning .ckpt files are exported to checkpoints/networks_*.pt by training)")
    if task is not None and payload["task"] != task:
        raise ValueError(f"checkpoint {path} is for task {payload['task']!r}, not {task!r}")
    return payload


def load_networks(path: str | Path, task: str | None = None, overrides: tuple[str, ...] | list[str] = ()
                  ) -> tuple[dict[str, nn.Module | None], DictConfig, dict[str, Any]]:
    """Rebuild the networks of a checkpoint from its stored config and load their weights.

    Returns ({"generator": G or None, "critic": D or None, "task_network": T}, config, payload). `overrides`
    (`key=value`) are applied to the stored config (e.g. data roots for evaluation).
    """
    from common.config import apply_overrides

    payload = read_networks_checkpoint(path, task)
    cfg = apply_overrides(OmegaConf.create(payload["config"]), overrides)
    module = load_task(payload["task"])
    built = module.build_networks(cfg)
    networks: dict[str, nn.Module | None] = {}
    for name in ("generator", "critic", "task_network"):
        state = payload["networks"].get(name)
        if state is None:
            networks[name] = None
            continue
        try:
            built[name].load_state_dict(state)
        except RuntimeError as error:
            raise ValueError(f"checkpoint {path}: weights of {name} do not fit the network built from its "
                             f"stored config: {error}") from error
        networks[name] = built[name].eval()
    if networks["task_network"] is None:
        raise ValueError(f"checkpoint {path} holds no task_network weights")
    return networks, cfg, payload


def load_pretrained(module: nn.Module, path: str | Path, name: str, task: str) -> None:
    """Initialise one network from a networks checkpoint of an earlier stage (pretrain G / pretrain T)."""
    payload = read_networks_checkpoint(path, task)
    if name not in payload["networks"]:
        raise ValueError(f"checkpoint {path} has no {name} weights (it holds {sorted(payload['networks'])})")
    try:
        module.load_state_dict(payload["networks"][name])
    except RuntimeError as error:
        raise ValueError(f"checkpoint {path}: {name} weights do not fit this config's network: {error}") from error


class ExportNetworks(pl.Callback):
    """Writes `networks_last.pt` at the end of training and `networks_best.pt` when the monitored
    validation metric improves (the official code selects the best KITTI-val checkpoint)."""

    def __init__(self, directory: str | Path, cfg: DictConfig, stage: str,
                 monitor: tuple[str, str] | None = None) -> None:
        self.directory, self.cfg, self.stage, self.monitor = Path(directory), cfg, stage, monitor
        self.best: float | None = None

    def _networks(self, module: pl.LightningModule) -> dict[str, nn.Module | None]:
        return module.networks()

    def setup(self, trainer: pl.Trainer, module: pl.LightningModule, stage: str) -> None:
        # one run folder, rank 0's: other ranks (torchrun, SLURM) learn its name here and write nothing
        self.directory = Path(trainer.strategy.broadcast(str(self.directory)))

    def state_dict(self) -> dict[str, Any]:  # the best value so far survives a resume
        return {"best": self.best}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = state_dict.get("best")

    def on_validation_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if self.monitor is None or trainer.sanity_checking or not trainer.is_global_zero:
            return
        name, mode = self.monitor
        value = trainer.callback_metrics.get(name)
        if value is None:
            return
        value = float(value)
        if self.best is None or (value > self.best if mode == "max" else value < self.best):
            self.best = value
            save_networks(self.directory / "networks_best.pt", self.cfg, self._networks(module), self.stage,
                          trainer.global_step, {"monitor": name, "value": value})

    def on_train_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:  # DDP: every rank holds the same weights; rank 0 writes them
            return
        save_networks(self.directory / "networks_last.pt", self.cfg, self._networks(module), self.stage,
                      trainer.global_step)
