"""Train one SharinGAN stage: `python -m sharingan.train EXPERIMENT.yaml [--stage S] [key=value ...]`.

Stages: `pretrain_generator` (stage 1), `pretrain_task` (stage 2), `train` (end to end, default). The run
folder is `runs/chapter2/<experiment>/<stage>/<timestamp>/` (config.yaml, env.json, tb/, checkpoints/);
besides Lightning's `last.ckpt` it holds `checkpoints/networks_last.pt` (and `networks_best.pt` when a
validation metric is monitored): the weights-only networks checkpoints that eval, predict and the next
stage read. Iteration counts come from `schedule.*_iterations` (one iteration = one loader batch; the
end-to-end stage makes several optimiser steps per iteration, converted to Lightning's `max_steps` here).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from common.config import load_config
from common.runs import start_run, write_metrics
from common.trainer import build_trainer
from sharingan.lit_module import (
    ExportNetworks,
    SharinGANModule,
    load_pretrained,
    optimizer_steps_per_iteration,
)
from sharingan.pretrain import GeneratorPretraining, TaskPretraining
from sharingan.tasks import load_task

STAGES = ("pretrain_generator", "pretrain_task", "train")


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


def run_stage(cfg: DictConfig, stage: str, root: str | Path = "runs", resume: str | Path | None = None) -> dict:
    """Train one stage; returns {"run_dir", "checkpoint" (best if any, else last networks checkpoint)}.

    `resume`: a Lightning `last.ckpt` of an interrupted run of the same stage (optimiser states, step count);
    training continues in a new run folder up to the configured iteration count.
    """
    task = load_task(str(cfg.task))
    iterations = stage_iterations(cfg, stage)
    if iterations <= 0:
        raise ValueError(f"schedule.{stage}_iterations must be positive to train stage {stage}")
    run_dir = start_run(cfg, "chapter2", f"{cfg.experiment}/{stage}", root=root)
    module, steps_per_iteration = build_module(cfg, stage)
    datamodule = task.build_datamodule(cfg, stage)

    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    trainer_cfg["max_steps"] = iterations * steps_per_iteration
    every = int(cfg.schedule.get("checkpoint_every", 0) or 0)
    trainer_cfg["checkpoint_every_n_steps"] = every * steps_per_iteration if every else None
    trainer_cfg.setdefault("num_sanity_val_steps", 0)
    monitor = None
    if stage == "train" and task.MONITOR is not None and hasattr(task, "validation_dataloader") \
            and task.validation_dataloader(cfg) is not None:
        monitor = tuple(task.MONITOR)
        trainer_cfg["val_check_interval"] = min(int(cfg.schedule.validate_every), iterations)
        trainer_cfg["check_val_every_n_epoch"] = None
    else:
        trainer_cfg["limit_val_batches"] = 0
    exporter = ExportNetworks(run_dir / "checkpoints", cfg, stage, monitor)
    trainer = build_trainer(trainer_cfg, run_dir, callbacks=[exporter])
    if resume is not None and not Path(resume).is_file():
        raise FileNotFoundError(f"checkpoint to resume from not found: {resume}")
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume) if resume else None)

    best, last = run_dir / "checkpoints" / "networks_best.pt", run_dir / "checkpoints" / "networks_last.pt"
    checkpoint = best if best.is_file() else last
    write_metrics(run_dir, {"stage": stage, "iterations": iterations, "global_steps": trainer.global_step,
                            "networks_checkpoint": str(checkpoint),
                            "best_validation": exporter.best, "monitor": monitor[0] if monitor else None})
    return {"run_dir": run_dir, "checkpoint": checkpoint}


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", help="experiment YAML, e.g. experiments/chapter2/depth_sharingan.yaml")
    parser.add_argument("--stage", choices=STAGES, default="train")
    parser.add_argument("--root", default="runs", help="folder that receives the run folders")
    parser.add_argument("--resume", default=None, help="Lightning last.ckpt of an interrupted run of this stage")
    args, overrides = parser.parse_known_args(argv)
    cfg = load_config(args.experiment, overrides)
    result = run_stage(cfg, args.stage, args.root, args.resume)
    print(f"{args.stage}: run folder {result['run_dir']}\nnetworks checkpoint {result['checkpoint']}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
