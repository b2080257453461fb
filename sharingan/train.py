"""Train one SharinGAN stage: `python -m sharingan.train EXPERIMENT.yaml [--stage S] [key=value ...]`.

Stages: `pretrain_generator` (stage 1), `pretrain_task` (stage 2), `train` (end to end, default). The run
folder is `runs/chapter2/<experiment>/<stage>/<timestamp>/` (config.yaml, env.json, tb/, checkpoints/);
besides Lightning's `last.ckpt` it holds `checkpoints/networks_last.pt` (and `networks_best.pt` when a
validation metric is monitored): the weights-only networks checkpoints that eval, predict and the next
stage read. Iteration counts come from `schedule.*_iterations` (one iteration = one loader batch; the
end-to-end stage makes several optimiser steps per iteration, converted to Lightning's `max_steps` here).

Resume (docs/chapter2-depth.md "Resuming"): `resume=last` (or `--resume last`) continues the newest
`checkpoints/last.ckpt` under `<root>/chapter2/<experiment>/<stage>/`, `resume=PATH` that file; the resumed
run gets a new run folder. Restored: step counter, every optimiser state (critic, G, T), RNG states, the data
position (loader batches consumed; the order is a function of (seed, sample number)), the skipped-batch
count, the best validation value so far and the plateau-stopping curve. `last.ckpt` is written every
`schedule.checkpoint_every` iterations (default 1000 when 0/null) through a temporary file + rename.
`divergence_policy=stop|skip`: a non-finite loss stops the run naming step and term (exit status 3 from the
command line), or skips the batch and counts it (`train/skipped_batches`).

`schedule.stop_at_plateau.enabled=true`: the end-to-end stage stops once its monitored validation metric has
plateaued (common.plateau: the criterion the miniature's study report applies), not before
`schedule.stop_at_plateau.after` x its iterations; `metrics.json` records the step (`stopped_at_plateau`).

Several GPUs / nodes (README "Several GPUs and nodes"): `trainer.devices=N trainer.num_nodes=M`, launched by
Lightning itself, by `torchrun ... -m sharingan.train ...` or by `srun python -m sharingan.train ...`. Rank 0
alone creates the run folder and writes into it (the other ranks learn its name from rank 0); the end-to-end
stage keeps per-rank batch-norm statistics and refuses `trainer.sync_batchnorm=true` (sharingan.lit_module).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from common.config import load_config
from common.performance import apply_performance
from common.plateau import plateau_stopping
from common.resilience import NonFiniteLossError, RNGStateCallback, resolve_resume
from common.runs import run_dir_for, seed_everything, start_run, write_metrics
from common.trainer import build_trainer, launched_rank_is_zero
from sharingan.checkpoints import TRAIN_STATE_KEY, ExportNetworks, load_pretrained
from sharingan.lit_module import SharinGANModule
from sharingan.pretrain import GeneratorPretraining, TaskPretraining
from sharingan.schedule import optimizer_steps_per_iteration
from sharingan.tasks import load_task

STAGES = ("pretrain_generator", "pretrain_task", "train")
DEFAULT_CHECKPOINT_EVERY = 1000  # iterations, when schedule.checkpoint_every is 0 / null


def build_module(cfg: DictConfig, stage: str):
    """The LightningModule of a stage, initialised from earlier stages' checkpoints when configured."""
    task = str(cfg.task)
    if stage == "pretrain_generator":
        return GeneratorPretraining(cfg), 1
    if stage == "pretrain_task":
        return TaskPretraining(cfg), 1
    if stage != "train":
        raise ValueError(f"unknown stage {stage!r} (one of {STAGES})")
    module = SharinGANModule(cfg)
    init = cfg.get("init", {}) or {}
    if init.get("generator") and module.generator is not None:
        load_pretrained(module.generator, init.generator, "generator", task)
    if init.get("task_network"):
        load_pretrained(module.task_network, init.task_network, "task_network", task)
    return module, optimizer_steps_per_iteration(cfg)


def stage_iterations(cfg: DictConfig, stage: str) -> int:
    key = f"{stage}_iterations"
    if key not in cfg.schedule:
        raise ValueError(f"config key schedule.{key} is missing")
    return int(cfg.schedule[key])


def resume_state(path: Path | None) -> dict[str, Any]:
    """The data position etc. stored by the stage's module in a Lightning checkpoint ({} when fresh)."""
    if path is None:
        return {}
    checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    state = checkpoint.get(TRAIN_STATE_KEY)
    if state is None:
        raise ValueError(f"{path} has no {TRAIN_STATE_KEY!r}: not a Lightning checkpoint of sharingan.train (or one "
                         "written before exact resume existed); it cannot be resumed exactly")
    return dict(state)


def run_stage(cfg: DictConfig, stage: str, root: str | Path = "runs", resume: str | Path | None = None) -> dict:
    """Train one stage; returns {"run_dir", "checkpoint" (best if any, else last networks checkpoint)}.

    `resume` (else `cfg.resume`): "last" (the newest `last.ckpt` of this experiment and stage under `root`) or
    the path of a Lightning `last.ckpt` of an interrupted run of the same stage; training continues exactly
    (optimiser states, step count, RNG, data position) in a new run folder up to the configured iteration count.
    """
    task = load_task(str(cfg.task))
    iterations = stage_iterations(cfg, stage)
    if iterations <= 0:
        raise ValueError(f"schedule.{stage}_iterations must be positive to train stage {stage}")
    resume = resume if resume is not None else (cfg.get("resume") or None)
    resume_path = resolve_resume(str(resume) if resume else None,
                                 Path(root) / "chapter2" / str(cfg.experiment) / stage)
    state = resume_state(resume_path)
    cfg = cfg.copy()
    with open_dict(cfg):
        if state:
            cfg.seed = int(state["seed"])  # the data order and noise are functions of the run's seed
            cfg.resume = str(resume_path)
    if stage == "train" and bool(OmegaConf.select(cfg, "trainer.sync_batchnorm", default=False)):
        raise ValueError("trainer.sync_batchnorm=true is refused for SharinGAN's end-to-end stage: its iteration is "
                         "verified exact under DDP with per-rank batch-norm statistics only (sharingan.lit_module); "
                         "remove trainer.sync_batchnorm")
    precision = str(OmegaConf.select(cfg, "trainer.precision", default="32-true"))
    if stage == "train" and precision not in ("32-true", "32", "64-true", "64"):
        raise ValueError(f"trainer.precision={precision} is refused for SharinGAN's end-to-end stage: on the tiny CPU "
                         "networks bf16 gradients differ from fp32 by O(1), and PyTorch's CPU bf16 convolution weight "
                         "gradient on the critic's 1x1 maps returns uninitialised (sometimes non-finite) values "
                         "(docs/benchmarks.md 'Throughput switches'); use trainer.precision=32-true")
    if launched_rank_is_zero():
        run_dir = start_run(cfg, "chapter2", f"{cfg.experiment}/{stage}", root=root)
    else:  # torchrun / SLURM / Lightning's launcher: rank 0's folder (ExportNetworks learns its name at setup)
        if "seed" in cfg:  # as start_run seeds rank 0
            seed_everything(int(cfg.seed), bool(cfg.get("deterministic", True)))
        run_dir = run_dir_for("chapter2", f"{cfg.experiment}/{stage}", root)
    module, steps_per_iteration = build_module(cfg, stage)
    # throughput switches (common.performance); the critic stays eager under compile: its WGAN-GP penalty
    # differentiates a gradient (double backward), which compiled graphs do not support
    apply_performance(module, OmegaConf.select(cfg, "performance"),
                      {name: getattr(module, name, None) for name in ("generator", "task_network")})
    datamodule = task.build_datamodule(cfg, stage)
    datamodule.start_batch = int(state.get("iterations", 0))

    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    trainer_cfg["max_steps"] = iterations * steps_per_iteration
    every = int(cfg.schedule.get("checkpoint_every", 0) or 0) or DEFAULT_CHECKPOINT_EVERY
    trainer_cfg["checkpoint_every_n_steps"] = every * steps_per_iteration
    trainer_cfg.setdefault("num_sanity_val_steps", 0)
    trainer_cfg.setdefault("use_distributed_sampler", False)  # the seeded sampler fixes the order
    monitor = None
    if stage == "train" and task.MONITOR is not None and hasattr(task, "validation_dataloader") \
            and task.validation_dataloader(cfg) is not None:
        monitor = tuple(task.MONITOR)
        trainer_cfg["val_check_interval"] = min(int(cfg.schedule.validate_every), iterations)
        trainer_cfg["check_val_every_n_epoch"] = None
    else:
        trainer_cfg["limit_val_batches"] = 0
    exporter = ExportNetworks(run_dir / "checkpoints", cfg, stage, monitor)
    callbacks = [exporter, RNGStateCallback()]
    stopper = plateau_stopping(cfg.schedule.get("stop_at_plateau"), monitor[0], monitor[1] == "min") \
        if monitor else None
    if stopper is not None:  # schedule.stop_at_plateau: end the run once the monitored metric has plateaued
        callbacks.append(stopper)
    if resume_path is not None and launched_rank_is_zero():  # the best networks so far: the interrupted run's
        previous_best = resume_path.parent / "networks_best.pt"
        if previous_best.is_file():
            shutil.copy2(previous_best, run_dir / "checkpoints" / "networks_best.pt")
    trainer = build_trainer(trainer_cfg, run_dir, callbacks=callbacks)
    with warnings.catch_warnings():
        # the data position is restored by the seeded sampler's start, which Lightning cannot see
        warnings.filterwarnings("ignore", message=".*resuming from a checkpoint that ended before the epoch.*")
        # checkpoints are written between iterations (after every optimiser step of one), as intended
        warnings.filterwarnings("ignore", message=".*no pre-optimization state was saved.*")
        warnings.filterwarnings("ignore", message="The dirpath has changed from")  # a resumed run's new folder
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume_path) if resume_path else None)

    run_dir = exporter.directory.parent  # rank 0's run folder on every rank
    best, last = run_dir / "checkpoints" / "networks_best.pt", run_dir / "checkpoints" / "networks_last.pt"
    checkpoint = best if best.is_file() else last
    if not trainer.is_global_zero:
        return {"run_dir": run_dir, "checkpoint": checkpoint}
    write_metrics(run_dir, {"stage": stage, "iterations": iterations, "global_steps": trainer.global_step,
                            "networks_checkpoint": str(checkpoint),
                            "best_validation": exporter.best, "monitor": monitor[0] if monitor else None,
                            "stopped_at_plateau": stopper.stopped_at if stopper is not None else None,
                            "skipped_batches": int(module.guard.skipped_steps),
                            "resumed_from": str(resume_path) if resume_path else None})
    return {"run_dir": run_dir, "checkpoint": checkpoint}


def run_or_resume(cfg: DictConfig, stage: str, root: str | Path = "runs") -> dict:
    """For the pipeline with `resume=last`: reuse the stage's newest finished run (metrics.json names its networks
    checkpoint), else resume its newest `last.ckpt`, else train from scratch. Without `resume`: `run_stage`."""
    resume = cfg.get("resume") or None
    if not resume:
        return run_stage(cfg, stage, root)
    if str(resume) != "last":
        raise ValueError(f"the pipeline resumes with resume=last only (got resume={resume}); resume a single "
                         "stage from a path with python -m sharingan.train --stage STAGE --resume PATH")
    stage_root = Path(root) / "chapter2" / str(cfg.experiment) / stage
    folders = sorted(path for path in stage_root.glob("*") if path.is_dir()) if stage_root.is_dir() else []
    for folder in reversed(folders):  # newest first (timestamped names)
        metrics = folder / "metrics.json"
        checkpoint = json.loads(metrics.read_text()).get("networks_checkpoint") if metrics.is_file() else None
        if checkpoint and Path(checkpoint).is_file():
            print(f"[resume] {stage}: reusing the finished run {folder}")
            return {"run_dir": folder, "checkpoint": Path(checkpoint)}
        if (folder / "checkpoints" / "last.ckpt").is_file():
            print(f"[resume] {stage}: resuming {folder / 'checkpoints' / 'last.ckpt'}")
            return run_stage(cfg, stage, root, resume=folder / "checkpoints" / "last.ckpt")
    cfg = cfg.copy()
    cfg.resume = None
    return run_stage(cfg, stage, root)


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m sharingan.train", description=__doc__.splitlines()[0])
    parser.add_argument("experiment", help="experiment YAML, e.g. experiments/chapter2/depth_sharingan.yaml")
    parser.add_argument("--stage", choices=STAGES, default="train")
    parser.add_argument("--root", default="runs", help="folder that receives the run folders")
    parser.add_argument("--resume", default=None, help="'last' or the Lightning last.ckpt of an interrupted run of "
                        "this stage (same as the override resume=...)")
    args, overrides = parser.parse_known_args(argv)
    cfg = load_config(args.experiment, overrides)
    try:
        result = run_stage(cfg, args.stage, args.root, args.resume)
    except NonFiniteLossError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(3) from None
    if launched_rank_is_zero():
        print(f"{args.stage}: run folder {result['run_dir']}\nnetworks checkpoint {result['checkpoint']}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
