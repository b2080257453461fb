"""Task modules: what SharinGAN needs to know about one primary task (depth, face normals).

SharinGAN itself (shared generator G, critic D on G's output images, the three-step optimisation of
eq. 2.10) is task-agnostic and lives in `sharingan.lit_module`, `sharingan.pretrain` and `sharingan.losses`
(the step schedule the data modules need, e.g. `batch_chunks`, in `sharingan.schedule`).
Everything task-specific sits in one module `sharingan/tasks/<task>.py`, found by name with
`load_task(name)`. The command-line tools (`train`, `eval`, `predict`, `summary`, `pipeline`) dispatch on the
task name stored in the config or in the checkpoint, so adding a task means adding one file here.

Every task module provides (checked by `load_task`):

NAME: str
    The task name ("depth", "normals"); stored in every checkpoint.
PIPELINE_CONFIG: str
    Experiment file used by `python -m sharingan.pipeline --task NAME`, relative to the repository root.
build_networks(cfg) -> dict[str, nn.Module]
    Keys "generator", "critic", "task_network" (paper sizes by default; `cfg.model.*` may shrink them).
build_datamodule(cfg, stage) -> pl.LightningDataModule
    stage is "pretrain_generator" (batches {"synthetic": {...}, "real": {...}}), "pretrain_task"
    (batches {"synthetic": {...}}) or "train" (both domains). Each domain batch is a dict of tensors whose
    "image" entry is the generator's input; other keys are the task's labels / geometry.
    The "train" loader may hold several chunks per step (`sharingan.schedule.batch_chunks`).
build_task_loss(cfg) -> object with three methods, each returning (loss tensor, {term name: tensor}):
    .synthetic(predictions, batch)   supervised term on synthetic data (part of L_T, eq. 2.8 / 2.9)
    .real(predictions, batch)        virtual supervision on real data (part of L_T)
    .pretrain(predictions, batch)    stage-2 supervised loss on synthetic data only
    `predictions` is whatever `task_network(image)` returns; the loss object knows its structure.
to_display(image) -> Tensor
    Maps a (B, 3, H, W) network input / generator output to [0, 1] for TensorBoard (Fig 2.4 panels).
prediction_panels(predictions, batch, domain) -> dict[str, Tensor]
    Named (B, 3, H, W) images in [0, 1] (colourised prediction, ground truth) for TensorBoard.
validation_dataloader(cfg) -> DataLoader | None, validation_metrics(generator, task_network, batch) -> dict
    Optional model selection on labelled real validation data (the official code picks the best
    validation checkpoint); MONITOR = ("val/<metric>", "max" | "min") or None; PROGRESS_BAR_METRIC = "<metric>"
    (a key of validation_metrics shown on the progress bar) or None.
validation_panels(generator, task_network, batch) -> dict[str, Tensor]
    Optional: named (B, 3, H, W) images in [0, 1] logged for the first validation batch.
evaluate(cfg, networks, out_dir) -> dict
    Runs the task's benchmarks with rebuilt networks ({"generator": G or None, "task_network": T}),
    writes `metrics.json` (with a protocol block) and the result tables into out_dir, returns the metrics.
predict(cfg, networks, inputs: list[Path], out_dir) -> list[Path]
    Writes visualisations / raw predictions per input image.
verify_data(cfg, stages) -> dict
    Checks that every data root and list file the stages need exists and parses; raises an error naming
    the missing path and the expected layout. Returns a short summary (counts per split).
write_tables(cfg, results: dict[row name -> metrics], out_dir) -> list[Path]
    The dissertation's tables with our rows beside the paper's.
"""

from __future__ import annotations

import importlib
from types import ModuleType

REQUIRED = (
    "NAME", "PIPELINE_CONFIG", "build_networks", "build_datamodule", "build_task_loss", "to_display",
    "prediction_panels", "evaluate", "predict", "verify_data", "write_tables",
)
OPTIONAL_DEFAULTS = {"MONITOR": None, "PROGRESS_BAR_METRIC": None}


def load_task(name: str) -> ModuleType:
    """Import `sharingan.tasks.<name>` and check that it provides the interface above."""
    if not name or not str(name).isidentifier():
        raise ValueError(f"invalid SharinGAN task name {name!r} (expected e.g. 'depth' or 'normals')")
    try:
        module = importlib.import_module(f"sharingan.tasks.{name}")
    except ModuleNotFoundError as error:
        if error.name == f"sharingan.tasks.{name}":
            raise ValueError(f"unknown SharinGAN task {name!r}: no module sharingan/tasks/{name}.py") from None
        raise
    missing = [attribute for attribute in REQUIRED if not hasattr(module, attribute)]
    if missing:
        raise TypeError(f"task module sharingan/tasks/{name}.py lacks {', '.join(missing)} "
                        "(see the interface in sharingan/tasks/__init__.py)")
    for attribute, default in OPTIONAL_DEFAULTS.items():
        if not hasattr(module, attribute):
            setattr(module, attribute, default)
    return module
