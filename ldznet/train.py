"""Train one Chapter 3 segmenter: `python -m ldznet.train experiments/chapter3/ldznet.yaml [key=value ...]`.

Writes `runs/chapter3/<experiment>/<timestamp>/` (common.runs): config.yaml, env.json, tb/ (loss curves,
learning rate, validation metrics, mask overlays), checkpoints/ (last.ckpt, best.ckpt by val/miou_best), and
`segmenter.pt`: the final trainable + EMA weights, loadable with `ldznet.checkpoints.load_segmenter`.
`metrics.json` records the learning rate actually used, the steps run, the training plan, the final validation
metrics and the sha256 of the Stable Diffusion files.

Training length: `schedule.train_samples` samples (the paper's 150000 steps at global batch 32 = 4.8 M), so a
run means the same on 1, 2 or 8 devices: steps = samples / (batch x devices x accumulation), the learning rate
follows the global batch and the EMA decay is rescaled to it (ldznet.lit_module.TrainingPlan). One line
`training plan: global batch ..., lr ..., N steps = S samples = E epochs ...` is printed at the start.
`trainer.max_steps=N` fixes the steps instead (smoke runs, tests). `schedule.stop_at_plateau.enabled=true` ends the
run once `val/miou_best` has plateaued (common.plateau), not before `schedule.stop_at_plateau.after` x its steps;
the step is printed (`[plateau] ...`) and `metrics.json`'s `global_step` says how far it went.

Resume: `resume=last` continues from the newest `checkpoints/last.ckpt` of the experiment (under
`<root>/chapter3/<experiment>/`), `resume=PATH` from that file; the resumed run gets a new run folder.
Restored: step counter, AdamW and plateau-scheduler states, EMA, RNG states, the epoch-mean loss so far and
the data position (docs/chapter3-models.md "Resuming"). `divergence_policy=stop|skip` decides what a
non-finite loss does. Checkpoints are written to a temporary file and renamed (a kill mid-save leaves the
previous `last.ckpt`).
"""

from __future__ import annotations

import datetime
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from torch.utils.data import DataLoader

from common.config import load_config, parse_cli
from common.performance import apply_performance
from common.plateau import plateau_stopping
from common.resilience import NonFiniteLossError, RNGStateCallback, resolve_resume
from common.runs import start_run
from common.trainer import build_trainer, set_max_steps
from ldznet.data import EpochStepSampler, NumberedSamples, build_dataset
from ldznet.lit_module import TRAIN_STATE_KEY, SegmenterLitModule, TrainingPlan, training_plan

log = logging.getLogger(__name__)

CHAPTER = "chapter3"
TIMESTAMP_VARIABLE = "LDZNET_RUN_TIMESTAMP"
RESUME_VARIABLE = "LDZNET_RESUME_PATH"


def build_loaders(cfg: DictConfig, start_sample: int = 0) -> tuple[DataLoader, DataLoader | None]:
    """Training order: `EpochStepSampler(seed)` from sample number `start_sample` (0, or a checkpoint's)."""
    data = cfg.data
    train_set = build_dataset(data.train, limit=data.get("train_limit"))
    if len(train_set) == 0:
        raise ValueError(f"training set {data.train.name} ({data.train.root}, split {data.train.split}) is empty")
    workers = int(data.num_workers)
    seed = int(cfg.get("seed") or 0)
    sampler = EpochStepSampler(len(train_set), seed, start=start_sample)
    train_loader = DataLoader(NumberedSamples(train_set, seed), batch_size=int(data.batch_size), sampler=sampler,
                              num_workers=workers, drop_last=len(train_set) >= int(data.batch_size),
                              persistent_workers=workers > 0)
    val_loader = None
    if data.get("val") is not None:
        val_set = build_dataset(data.val, limit=data.get("val_limit"))
        val_loader = DataLoader(val_set, batch_size=int(data.batch_size), shuffle=False, num_workers=workers)
    return train_loader, val_loader


def launcher_job_name() -> str | None:
    """A run-folder name every process of one launch agrees on, on every node, when an external launcher started
    them: torchrun (`TORCHELASTIC_RUN_ID` + restart count) or SLURM with several tasks (`SLURM_JOB_ID` + requeue
    count). A restart or requeue gets a new name, so a resumed run writes a new folder as with one process."""
    environ = os.environ
    if "TORCHELASTIC_RUN_ID" in environ:
        return f"torchrun-{environ['TORCHELASTIC_RUN_ID']}-{environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
    if "SLURM_JOB_ID" in environ and int(environ.get("SLURM_NTASKS", "1")) > 1:
        return f"slurm-{environ['SLURM_JOB_ID']}-{environ.get('SLURM_RESTART_COUNT', '0')}"
    return None


def shared_timestamp() -> str:
    """One run-folder name for all DDP ranks. Lightning's own launcher starts ranks > 0 as copies of this
    process with its environment, so rank 0 publishes its timestamp there before `fit`; under torchrun or SLURM
    every process (on every node) derives the same name from the launcher's job id instead."""
    if int(os.environ.get("LOCAL_RANK", "0")) > 0 and TIMESTAMP_VARIABLE in os.environ:
        return os.environ[TIMESTAMP_VARIABLE]
    timestamp = launcher_job_name() or datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    os.environ[TIMESTAMP_VARIABLE] = timestamp
    return timestamp


def resume_state(path: Path | None, cfg: DictConfig | None = None) -> dict[str, Any]:
    """The data position etc. stored by SegmenterLitModule in a Lightning checkpoint ({} when fresh); with
    `cfg`, the checkpoint's variant and task must be the config's."""
    if path is None:
        return {}
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # noqa: BLE001 - re-raised naming the file
        raise ValueError(f"cannot resume from {path}: not a readable checkpoint ({error})") from error
    header = checkpoint.get("ldznet_segmenter") or {}
    if cfg is not None:
        for key, wanted in (("variant", str(cfg.model.variant)), ("task", str(cfg.task))):
            if header.get(key) != wanted:
                raise ValueError(f"cannot resume from {path}: it holds a {header.get(key)!r} {key}, not {wanted!r} "
                                 f"({key} mismatch)")
    state = checkpoint.get(TRAIN_STATE_KEY)
    if state is None:
        raise ValueError(f"{path} has no {TRAIN_STATE_KEY!r}: not a checkpoint of ldznet.train (or written before "
                         "exact resume existed); it cannot be resumed exactly")
    return dict(state)


def plan_for(cfg: DictConfig, trainer, max_steps: int | None = None, dataset_size: int | None = None) -> TrainingPlan:
    """The run's `TrainingPlan` on `trainer`'s devices (world size) and gradient accumulation; the length is
    `schedule.train_samples` unless `trainer.max_steps` is given (then a warning says the steps are fixed)."""
    schedule = cfg.get("schedule") or {}
    train_samples = schedule.get("train_samples")
    if max_steps is not None and int(max_steps) > 0 and train_samples is not None:
        log.warning("trainer.max_steps=%s overrides schedule.train_samples=%s: a fixed number of steps, whose "
                    "samples change with the device count", max_steps, train_samples)
    return training_plan(OmegaConf.to_container(cfg.optim, resolve=True), int(cfg.data.batch_size),
                         int(trainer.world_size), int(trainer.accumulate_grad_batches), train_samples=train_samples,
                         max_steps=max_steps, dataset_size=dataset_size)


def check_resume_world(state: dict[str, Any], plan: TrainingPlan, path: Path | None) -> None:
    """A checkpoint resumes with the number of processes, global batch and gradient accumulation it was written
    with; anything else is refused, naming both. Another world size at the same global batch is refused too:
    the data position and the plateau input do continue (the checkpoint stores the next sample number of the
    global order and the rank-averaged epoch loss sum), but a 1 -> 2 -> 1 process float64 test ended with
    weights up to ~lr away from an uninterrupted run's, not yet understood (README "Several GPUs and nodes")."""
    if state.get("global_batch") is None:
        log.warning("resume: %s does not record its global batch and world size (written before they were "
                    "stored); resume it with the devices x nodes and data.batch_size it was written with", path)
        return
    saved_batch, saved_world = int(state["global_batch"]), int(state.get("world_size", 1))
    saved_accumulation = int(state.get("accumulation", 1))
    if (saved_world, saved_batch, saved_accumulation) == (plan.devices, plan.global_batch, plan.accumulation):
        return
    per_device = saved_batch // saved_world // saved_accumulation
    raise ValueError(
        f"cannot resume from {path}: it was written by {saved_world} process(es) at global batch {saved_batch} "
        f"({per_device} per device x {saved_world} devices x {saved_accumulation} accumulation), this run has "
        f"{plan.devices} process(es) at global batch {plan.global_batch} ({plan.batch_size} per device x "
        f"{plan.devices} devices x {plan.accumulation} accumulation); resume with trainer.devices x "
        f"trainer.num_nodes = {saved_world}, data.batch_size={per_device} and "
        f"trainer.accumulate_grad_batches={saved_accumulation}")


def train(cfg: DictConfig, components=None, root: str | Path = "runs") -> Path:
    """Fit `cfg` (a composed chapter-3 experiment) and export `segmenter.pt`; returns the run folder."""
    experiment = str(cfg.get("experiment") or cfg.model.variant)
    resume_path = resolve_resume(cfg.get("resume") or None, Path(root) / CHAPTER / experiment)
    if resume_path is not None:  # DDP ranks > 0 (copies of this process) resume from the file rank 0 chose
        if int(os.environ.get("LOCAL_RANK", "0")) > 0 and RESUME_VARIABLE in os.environ:
            resume_path = Path(os.environ[RESUME_VARIABLE])
        os.environ[RESUME_VARIABLE] = str(resume_path)
    state = resume_state(resume_path, cfg)
    with open_dict(cfg):
        if state:
            if "seed" in cfg and int(cfg.seed) != int(state["seed"]):
                log.warning("resume: using the checkpoint's seed %s, not %s", state["seed"], cfg.seed)
            cfg.seed = int(state["seed"])
            cfg.resume = str(resume_path)
        cfg.divergence_policy = str(cfg.get("divergence_policy") or "stop")
        if "use_distributed_sampler" not in cfg.trainer:
            cfg.trainer.use_distributed_sampler = False  # EpochStepSampler shards by rank itself
    run_dir = start_run(cfg, CHAPTER, experiment, root=root, timestamp=shared_timestamp())
    train_loader, val_loader = build_loaders(cfg, start_sample=int(state.get("next_sample_number", 0)))
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    optim_cfg = OmegaConf.to_container(cfg.optim, resolve=True)
    module = SegmenterLitModule(model_cfg, optim_cfg, task=str(cfg.task),
                                log_images_every=int(cfg.log_images_every), components=components, run_dir=run_dir,
                                divergence_policy=cfg.divergence_policy, seed=int(cfg.get("seed") or 0))
    # throughput switches (common.performance): compile the trainable UNet and head (the frozen LDM's forward is
    # stopped by a hook after block 10, which a compiled graph cannot do)
    apply_performance(module, OmegaConf.select(cfg, "performance"),
                      {"unet": module.model.unet, "head": module.model.head})
    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    max_steps = trainer_cfg.pop("max_steps", None)
    # last.ckpt (every N steps) and best.ckpt (by val/miou_best) come from two separate callbacks
    callbacks = [RNGStateCallback()]
    stopper = plateau_stopping(OmegaConf.select(cfg, "schedule.stop_at_plateau"), "val/miou_best",
                               lower_better=False) if val_loader is not None else None
    if stopper is not None:  # schedule.stop_at_plateau: end the run once val/miou_best has plateaued
        callbacks.append(stopper)
    trainer = build_trainer(trainer_cfg, run_dir, monitor="val/miou_best" if val_loader is not None else None,
                            mode="max", callbacks=callbacks)
    module.training_plan = plan = plan_for(cfg, trainer, max_steps, len(train_loader.dataset))
    if state:
        check_resume_world(state, plan, resume_path)
    # the length depends on the device count Lightning resolved (trainer.world_size), known only now
    set_max_steps(trainer, plan.steps)
    if trainer.is_global_zero:
        print(plan.line(), flush=True)
    # the module's on_train_end writes segmenter.pt, the final last.ckpt and metrics.json
    with warnings.catch_warnings():
        # the data position is restored by EpochStepSampler(start=...), which Lightning cannot see
        warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch")
        trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=val_loader,
                    ckpt_path=str(resume_path) if resume_path else None)
    if trainer.is_global_zero and not (run_dir / "segmenter.pt").is_file():
        raise RuntimeError(f"training ended without exporting {run_dir / 'segmenter.pt'}")
    return run_dir


def main(argv: Sequence[str] | None = None) -> int:
    experiment, overrides = parse_cli(sys.argv[1:] if argv is None else argv, prog="python -m ldznet.train",
                                      description=__doc__)
    cfg = load_config(experiment, overrides)
    try:
        run_dir = train(cfg)
    except NonFiniteLossError as error:
        print(f"training stopped: {error}", file=sys.stderr)
        return 3
    print(f"run folder: {run_dir}\nsegmenter: {run_dir / 'segmenter.pt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
