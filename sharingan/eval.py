"""Evaluate a SharinGAN networks checkpoint: `python -m sharingan.eval --checkpoint C [--out DIR] [key=value]`.

The checkpoint names its task; the task module runs its benchmarks (depth: KITTI Eigen caps 50/80 m and
Make3D C1, selected by `eval.benchmarks`) and writes `metrics.json` (with a protocol block per benchmark)
and the dissertation's tables with our row beside the paper's. `key=value` overrides apply to the config
stored in the checkpoint (e.g. `data.kitti.root=/data/kitti eval.benchmarks=[make3d]`).
Without `--out`, results go to a new run folder `runs/chapter2/<experiment>/eval/<timestamp>/`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig

from common.runs import start_run
from sharingan.checkpoints import load_networks
from sharingan.tasks import load_task


def evaluate_checkpoint(checkpoint: str | Path, out_dir: str | Path, cfg: DictConfig | None = None,
                        overrides: Sequence[str] = (), task: str | None = None) -> dict:
    """Rebuild the networks of `checkpoint` and run its task's evaluation with `cfg` (default: the stored
    config with `overrides`)."""
    networks, stored, payload = load_networks(checkpoint, task, list(overrides))
    cfg = cfg if cfg is not None else stored
    if str(cfg.task) != payload["task"]:
        raise ValueError(f"checkpoint {checkpoint} is for task {payload['task']!r} but the config is for "
                         f"{cfg.task!r}")
    return load_task(payload["task"]).evaluate(cfg, networks, out_dir)


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m sharingan.eval", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="networks checkpoint (checkpoints/networks_*.pt)")
    parser.add_argument("--out", default=None, help="output folder (default: a new run folder under --root)")
    parser.add_argument("--task", default=None, help="refuse a checkpoint of another task")
    parser.add_argument("--root", default="runs")
    args, overrides = parser.parse_known_args(argv)
    _, cfg, _ = load_networks(args.checkpoint, args.task, overrides)
    out_dir = Path(args.out) if args.out else start_run(cfg, "chapter2", f"{cfg.experiment}/eval", root=args.root)
    results = evaluate_checkpoint(args.checkpoint, out_dir, cfg, task=args.task)
    print(f"metrics written to {Path(out_dir) / 'metrics.json'}")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
