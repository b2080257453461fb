"""Speed and memory of every method, measured side by side (`python -m benchmarks`, `make bench`).

One file per idea:
    segmentation  RGBNet / ZNet / LD-ZNet inference (dissertation §3.4.4), and the block-10 stop of the LDM
    sharingan     one SharinGAN training iteration (5 critic, G, T steps) and G / T / D separately (§2.2)
    loaders       images per second per worker of the KITTI, vKITTI and PhraseCut loaders (real formats)
    memory        peak memory of one LD-ZNet training step (batch, checkpointing, bf16)
    training_step one Chapter-3 training step phase by phase; AdamW for-loop / foreach / fused (bit-identical?)
    timing        warm-up / repeats / median / CUDA sync, peak memory (CUDA allocator or process RSS)
    report        JSON + Markdown results with device, versions and date

Each benchmark module has `run(context) -> section dict` (title, settings, reductions, tables, notes).
Benchmarks are not tests: tests/benchmarks only checks that each one runs at its `--quick` size.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

BENCHMARKS = ("segmentation", "sharingan", "loaders", "memory", "training_step")


def load_benchmark(name: str) -> Callable:
    """The `run(context)` of benchmark `name`; a missing project module becomes a 'not measured' section."""
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; one of {BENCHMARKS}")

    def run(context):
        try:  # the import too: a benchmark module imports the project modules it measures at its top
            return importlib.import_module(f"benchmarks.{name}").run(context)
        except ModuleNotFoundError as error:
            missing = error.name or str(error)
            if missing.split(".")[0] not in ("sharingan", "ldznet", "common"):
                raise
            return {"name": name, "title": name, "status": f"not measured: {missing} missing", "tables": [],
                    "notes": [f"{missing} does not exist yet in this checkout"]}

    return run
