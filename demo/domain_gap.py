"""Does the street world have a domain gap, and does SharinGAN close it? Evidence for the study's depth claims.

SharinGAN's claims (Tables 2.1, 2.5) are about a *domain gap*: a network trained on synthetic images loses
accuracy on real ones, and mapping both into a shared domain wins part of it back. In the miniature that gap
can be measured directly: the KITTI-layout test drives are re-rendered by the *synthetic* (vKITTI-style)
renderer from the same seeds (`demo.worlds.street.write_kitti(style="synthetic")`): identical geometry and
identical Velodyne ground truth, only the appearance differs. Every depth row of a finished run (each training
seed) and the per-pixel-mean floor are scored by the chapter's own `evaluate` on both versions.

    gap = error(real-style test) - error(synthetic-style test)     (same scenes, same ground truth)

A row that suffers from the gap has gap > 0 (AbsRel, RMSE) or < 0 (delta < 1.25); the floor ignores its input,
so its gap is 0 by construction (a check of the set-up). If "no SharinGAN" shows no gap, the world cannot
show SharinGAN's benefit, whatever the training length.

    python -m demo.domain_gap runs/demo-study            # -> runs/demo-study/domain_gap/domain_gap.{md,json}
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from common.checkpoints import write_json, write_text
from common.config import load_config
from demo.data_overrides import depth_data_overrides
from demo.floors import DEPTH_FLOOR, ConstantDepthNetwork, mean_training_depth
from demo.worlds.street import write_kitti
from sharingan.checkpoints import load_networks
from sharingan.tasks import load_task

METRICS = (("abs_rel", "AbsRel", 1), ("rmse", "RMSE (m)", 1), ("a1", "δ<1.25", -1))  # (key, label, worse when up)


def write_synthetic_style_test(run_root: Path, out: Path) -> Path:
    """The run's KITTI-layout test drives, re-rendered in the synthetic style (same seeds) under ``out``."""
    world = OmegaConf.create(json.loads((run_root / "world_street" / "DONE.json").read_text())["config"])
    target = out / "kitti_synthetic_style"
    if not (target / "test.txt").is_file():
        write_kitti(target, {k: tuple(v) for k, v in world.kitti.items()}, tuple(world.size), seed=int(world.seed),
                    style="synthetic", splits=["test"])
    return target


def scores(cfg, networks, out: Path, cap: int) -> dict[str, float]:
    table = load_task("depth").evaluate(cfg, networks, out)[f"kitti_eigen_cap{cap}"]["metrics"]
    return {key: float(table[key]) for key, _, _ in METRICS}


def measure(run_root: str | Path, out: str | Path | None = None, cap: int = 80) -> dict:
    """Score every depth row (every seed) and the floor on the real-style and the synthetic-style test."""
    run_root = Path(run_root)
    out = Path(out) if out else run_root / "domain_gap"
    out.mkdir(parents=True, exist_ok=True)
    status = json.loads((run_root / "stages.json").read_text())
    depth = status.get("depth", {})
    if depth.get("status") not in ("done", "cached"):
        raise SystemExit(f"{run_root}/stages.json: the depth stage did not finish ({depth.get('status')})")
    config = json.loads((run_root / "depth" / "DONE.json").read_text())["config"]
    synthetic_style = write_synthetic_style_test(run_root, out)
    world = run_root / "world_street"
    seeds = sorted(depth["result"]["seeds"], key=int)

    def config_for(seed: str, kitti: Path):
        overrides = list(config["overrides"]) + depth_data_overrides(world) + [
            f"seed={seed}", f"data.kitti.root={kitti}", f"data.kitti.test_list={kitti / 'test.txt'}",
            "eval.benchmarks=[kitti_eigen]"]
        return load_config(config["config"], overrides)

    rows: dict[str, dict[str, dict]] = {}
    real_cfg, synthetic_cfg = config_for(seeds[0], world / "kitti"), config_for(seeds[0], synthetic_style)
    floor = {"generator": None, "task_network": ConstantDepthNetwork(mean_training_depth(real_cfg))}
    rows[DEPTH_FLOOR] = {"-": {"real": scores(real_cfg, floor, out / "eval", cap),
                               "synthetic_style": scores(synthetic_cfg, floor, out / "eval", cap)}}
    for seed in seeds:
        real_cfg, synthetic_cfg = config_for(seed, world / "kitti"), config_for(seed, synthetic_style)
        for name, checkpoint in depth["result"]["seeds"][seed]["checkpoints"].items():
            if not checkpoint:
                continue
            networks, _, _ = load_networks(checkpoint, "depth")
            rows.setdefault(name, {})[seed] = {"real": scores(real_cfg, networks, out / "eval", cap),
                                               "synthetic_style": scores(synthetic_cfg, networks, out / "eval", cap)}
    result = {"run": str(run_root), "cap_m": cap, "synthetic_style_test": str(synthetic_style), "rows": rows,
              "summary": summarise(rows)}
    write_json(out / "domain_gap.json", result)
    write_text(out / "domain_gap.md", markdown(result))
    return result


def summarise(rows: dict[str, dict[str, dict]]) -> dict[str, dict[str, dict]]:
    """Per row and metric: mean over seeds of real, synthetic-style and the paired gap, with the gap's SE."""
    summary = {}
    for name, per_seed in rows.items():
        summary[name] = {}
        for key, _, _ in METRICS:
            real = np.array([entry["real"][key] for entry in per_seed.values()])
            synthetic = np.array([entry["synthetic_style"][key] for entry in per_seed.values()])
            gap = real - synthetic
            se = float(gap.std(ddof=1) / np.sqrt(len(gap))) if len(gap) > 1 else None
            summary[name][key] = {"real": float(real.mean()), "synthetic_style": float(synthetic.mean()),
                                  "gap": float(gap.mean()), "gap_se": se, "seeds": len(gap)}
    return summary


def markdown(result: dict) -> str:
    lines = [f"Domain gap on the KITTI-layout test (cap {result['cap_m']} m): the same drives and Velodyne ground "
             "truth rendered in the real style (the test set) and in the synthetic style; mean over training "
             "seeds, gap = real - synthetic style (± standard error over seeds).", "",
             "| row | seeds | " + " | ".join(f"{label} real / synthetic style / gap" for _, label, _ in METRICS) + " |",
             "|---|---|" + "---|" * len(METRICS)]
    for name, metrics in result["summary"].items():
        cells = []
        for key, _, _ in METRICS:
            m = metrics[key]
            se = f" ± {m['gap_se']:.3f}" if m["gap_se"] is not None else ""
            cells.append(f"{m['real']:.3f} / {m['synthetic_style']:.3f} / {m['gap']:+.3f}{se}")
        lines.append(f"| {name} | {next(iter(metrics.values()))['seeds']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo.domain_gap", description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a finished demo or study folder (runs/demo, runs/demo-study)")
    parser.add_argument("--out", default=None, help="output folder (default <run>/domain_gap)")
    parser.add_argument("--cap", type=int, default=80, choices=(50, 80), help="KITTI depth cap in metres")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    result = measure(args.run, args.out, args.cap)
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
