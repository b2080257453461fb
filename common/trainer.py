"""Build a Lightning Trainer from a config node (the `trainer:` section of an experiment).

The node holds plain `pl.Trainer` keyword arguments (accelerator, devices, precision, strategy, max_steps,
log_every_n_steps, ...). Added here:
- TensorBoard logging into `<run>/tb` and the TQDM progress bar;
- `<run>/checkpoints/last.ckpt` from an unmonitored callback (every `checkpoint_every_n_steps` steps and at
  the end: a callback that also monitors a metric would defer its step saves until the metric exists), and
  `best.ckpt` from a second callback when a metric to `monitor` is given;
- every checkpoint written atomically (`common.resilience.AtomicCheckpointIO`).
Several GPUs get DDP through Lightning's own strategy; nothing here launches processes by hand. Processes
started by torchrun, SLURM (`srun`) or Lightning's DDP launcher all run the same command; `launched_rank_is_zero`
tells, before any Trainer exists, whether this process is the one that creates the run folder.

The three places where the project reaches inside Lightning's loops (not public API, pytorch-lightning 2.6) are
the functions at the end of this file: `set_max_steps`, `count_optimizer_steps_as_done` and
`first_epoch_end_after_resume`. `tests/common/test_trainer.py` checks them against the installed Lightning, so an
upgrade that changes them fails there, by name, instead of silently changing a training run.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import Callback, ModelCheckpoint, TQDMProgressBar
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.plugins.io import CheckpointIO

from common.resilience import AtomicCheckpointIO

DEFAULTS: dict[str, Any] = {
    "accelerator": "auto",
    "devices": "auto",
    "precision": "32-true",
    "strategy": "auto",
    "log_every_n_steps": 10,
}
# Keys of the trainer node that are ours, not pl.Trainer's.
OWN_KEYS = ("progress_refresh_rate", "checkpoint_every_n_steps")


def _device_count(accelerator: str, devices: Any) -> int:
    if isinstance(devices, int):
        return devices
    if isinstance(devices, (list, tuple)):
        return len(devices)
    if str(devices) == "auto" and accelerator in ("auto", "gpu", "cuda"):
        return max(torch.cuda.device_count(), 1)
    return 1


def launched_rank_is_zero() -> bool:
    """Whether this process is global rank 0 as its launcher numbered it, read from the environment before
    Lightning sets up the process group: torchrun (`RANK`), SLURM with several tasks (`SLURM_PROCID`), Lightning's
    own DDP launcher (the processes it starts get `LOCAL_RANK` / `NODE_RANK`). A single process, and the parent
    of `ddp_spawn`, is rank 0."""
    environ = os.environ
    if "RANK" in environ:
        return int(environ["RANK"]) == 0
    if "SLURM_PROCID" in environ and int(environ.get("SLURM_NTASKS", "1")) > 1:
        return int(environ["SLURM_PROCID"]) == 0
    return int(environ.get("LOCAL_RANK", "0")) == 0 and int(environ.get("NODE_RANK", "0")) == 0


def build_trainer(trainer_cfg: DictConfig | dict | None, run_dir: str | Path, monitor: str | None = None,
                  mode: str = "max", callbacks: Sequence[Callback] = ()) -> pl.Trainer:
    """Trainer with logger, checkpoints and progress bar wired to `run_dir`."""
    options = dict(DEFAULTS)
    if trainer_cfg is not None:
        given = OmegaConf.to_container(trainer_cfg, resolve=True) if isinstance(trainer_cfg, DictConfig) \
            else dict(trainer_cfg)
        options.update(given)
    refresh_rate = int(options.pop("progress_refresh_rate", 1))
    every_n_steps = options.pop("checkpoint_every_n_steps", None)
    if options["strategy"] == "auto" and _device_count(options["accelerator"], options["devices"]) > 1:
        # Manual-optimisation modules (SharinGAN) may leave parameters unused in a step.
        options["strategy"] = "ddp_find_unused_parameters_true"

    run_dir = Path(run_dir)
    logger = TensorBoardLogger(save_dir=str(run_dir), name="tb", version="", default_hp_metric=False)
    directory = str(run_dir / "checkpoints")
    last = ModelCheckpoint(dirpath=directory, save_last=True, save_top_k=0, auto_insert_metric_name=False,
                           every_n_train_steps=int(every_n_steps) if every_n_steps else None)
    checkpoints = [last]
    if monitor:
        checkpoints.append(ModelCheckpoint(dirpath=directory, monitor=monitor, mode=mode, save_top_k=1,
                                           filename="best", auto_insert_metric_name=False))
    all_callbacks = [*checkpoints, TQDMProgressBar(refresh_rate=refresh_rate), *callbacks]
    plugins = list(options.pop("plugins", None) or [])
    if not any(isinstance(plugin, CheckpointIO) for plugin in plugins):
        plugins.append(AtomicCheckpointIO())
    return pl.Trainer(logger=logger, callbacks=all_callbacks, default_root_dir=str(run_dir), plugins=plugins,
                      **options)


# ------------------------------------------------------------------------------ Lightning internals (adapter)
def set_max_steps(trainer: pl.Trainer, steps: int) -> None:
    """Set the training length after the Trainer exists (`Trainer(max_steps=)` stores it in the same place);
    LD-ZNet's length depends on the device count, which is known only once the Trainer has resolved it."""
    trainer.fit_loop.epoch_loop.max_steps = steps


def count_optimizer_steps_as_done(trainer: pl.Trainer, count: int) -> None:
    """Manual optimisation: count `count` optimiser steps as taken (and so `trainer.global_step`) without
    stepping; SharinGAN's skipped batches keep one iteration = a fixed number of global steps."""
    progress = trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress
    for _ in range(count):
        progress.increment_ready()
        progress.increment_completed()


def first_epoch_end_after_resume(trainer: pl.Trainer) -> bool:
    """Whether this epoch end is the first one after resuming from a checkpoint saved at the end of an epoch's
    batches, where Lightning does not step plateau schedulers (LD-ZNet steps its own then)."""
    fit_loop = trainer.fit_loop
    return fit_loop.restarting and fit_loop.epoch_loop._num_ready_batches_reached()
