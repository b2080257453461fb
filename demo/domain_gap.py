"""Do the Chapter-2 worlds have a domain gap, and does SharinGAN close it? Evidence for the study's claims.

SharinGAN's claims (Tables 2.1, 2.3, 2.5) are about a *domain gap*: a network trained on synthetic images loses
accuracy on real ones, and mapping both into a shared domain wins part of it back. In the miniature the gap
can be measured directly: the real-layout test set is re-rendered by the *synthetic* renderer from the same
random streams, so the scenes and the ground truth are identical and only the appearance differs:

- depth: the KITTI-layout test drives in the vKITTI style (`demo.worlds.street.write_kitti(style=...)`;
  identical geometry and Velodyne scans), scored on the Eigen protocol (cap 80 m);
- faces: the Photoface-layout test faces under the same four lights in the SfSNet style
  (`demo.worlds.faces.write_photoface(style=...)`; the real style's normals and skin masks), scored by MAE.

Every row of a finished run (each training seed), the task network at the end of its synthetic-only pretraining
(stage 2: Table 2.1's all-synthetic baseline) and the floor are scored by the chapter's own `evaluate` on
both versions: gap = error(real style) - error(synthetic style). A row that suffers from the gap has a
positive gap (AbsRel, RMSE, MAE) or a negative one (delta < 1.25); the floor ignores its input, so its gap is
0 by construction (a check of the set-up). If the rows show no gap, the world cannot show SharinGAN's benefit,
whatever the training length.

    python -m demo.domain_gap runs/demo-study            # -> runs/demo-study/domain_gap/{depth,faces}.{md,json}
    python -m demo.domain_gap runs/demo-study --stage faces --attribute   # + each real-style effect switched off
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
from demo.data_overrides import depth_data_overrides, faces_data_overrides
from demo.floors import DEPTH_FLOOR, FACES_FLOOR, depth_floor_networks, faces_floor_networks
from demo.worlds.faces import REAL_EFFECTS, write_photoface
from demo.worlds.street import write_kitti
from sharingan.checkpoints import load_networks
from sharingan.tasks import load_task

PRETRAINED_ROW = "T after stage 2 (pretraining on synthetic only)"  # = the all-synthetic row of Table 2.1
# per chapter stage: (metric key, label) pairs; a positive gap = worse on the real style, except delta < 1.25
METRICS = {"depth": (("abs_rel", "AbsRel"), ("rmse", "RMSE (m)"), ("a1", "δ<1.25")),
           "faces": (("mae_deg", "MAE (deg)"), ("lt30", "% < 30 deg"))}


def _world(run_root: Path, stage: str):
    return OmegaConf.create(json.loads((run_root / stage / "DONE.json").read_text())["config"])


def synthetic_style_depth(run_root: Path, out: Path) -> list[str]:
    """The run's KITTI-layout test drives re-rendered in the synthetic style; the config overrides to use them."""
    world, target = _world(run_root, "world_street"), out / "kitti_synthetic_style"
    if not (target / "test.txt").is_file():
        write_kitti(target, {k: tuple(v) for k, v in world.kitti.items()}, tuple(world.size), seed=int(world.seed),
                    style="synthetic", splits=["test"])
    return [f"data.kitti.root={target}", f"data.kitti.test_list={target / 'test.txt'}"]


def synthetic_style_faces(run_root: Path, out: Path) -> list[str]:
    """The run's Photoface-layout faces re-rendered in the SfSNet style; the config overrides to use them."""
    world, target = _world(run_root, "world_faces"), out / "photoface_synthetic_style"
    p = world.photoface
    if not (target / "DONE").is_file():
        write_photoface(target, int(p.train_subjects), int(p.test_subjects), int(p.sessions), int(world.size),
                        int(world.seed), style="synthetic")
        (target / "DONE").write_text("")
    return [f"data.photoface_root={target}"]


def without_effect_faces(run_root: Path, out: Path) -> dict[str, list[str]]:
    """The run's Photoface-layout faces in the real style with one effect switched off at a time
    (`demo.worlds.faces.REAL_EFFECTS`): {"without <effect>": config overrides}. The cost of an effect is then
    error(real) - error(real without it), on the same faces, lights and ground truth."""
    world, styles = _world(run_root, "world_faces"), {}
    p = world.photoface
    for effect in REAL_EFFECTS:
        target = out / f"photoface_without_{effect}"
        if not (target / "DONE").is_file():
            write_photoface(target, int(p.train_subjects), int(p.test_subjects), int(p.sessions), int(world.size),
                            int(world.seed), effects=tuple(e for e in REAL_EFFECTS if e != effect))
            (target / "DONE").write_text("")
        styles[f"without {effect}"] = [f"data.photoface_root={target}"]
    return styles


TASKS = {  # chapter stage -> (task, world stage, data overrides, benchmark, evaluation-only overrides, floor, ...)
    "depth": {"task": "depth", "world": "world_street", "data": depth_data_overrides, "benchmark": "kitti_eigen_cap80",
              "only": ["eval.benchmarks=[kitti_eigen]"], "floor": DEPTH_FLOOR,
              "floor_networks": depth_floor_networks,
              "synthetic_style": synthetic_style_depth},
    "faces": {"task": "normals", "world": "world_faces", "data": faces_data_overrides, "benchmark": "photoface",
              "only": ["data.multipie_root=null"], "floor": FACES_FLOOR,
              "floor_networks": faces_floor_networks,
              "synthetic_style": synthetic_style_faces, "effects": without_effect_faces},
}


def measure(run_root: str | Path, stage: str = "depth", out: str | Path | None = None,
            attribute: bool = False) -> dict:
    """Score every row of `stage` (every seed) and its floor on the real-style and the synthetic-style test;
    with `attribute` (faces), also on the real style with each effect switched off (`attribution`)."""
    spec, run_root = TASKS[stage], Path(run_root)
    out = Path(out) if out else run_root / "domain_gap"
    out.mkdir(parents=True, exist_ok=True)
    status = json.loads((run_root / "stages.json").read_text())
    entry = status.get(stage, {})
    if entry.get("status") not in ("done", "cached"):
        raise SystemExit(f"{run_root}/stages.json: the {stage} stage did not finish ({entry.get('status')})")
    config = json.loads((run_root / stage / "DONE.json").read_text())["config"]
    synthetic_style = spec["synthetic_style"](run_root, out)
    if attribute and "effects" not in spec:
        raise SystemExit(f"demo.domain_gap: no effect attribution for the {stage} stage (only for faces)")
    effect_styles = spec["effects"](run_root, out) if attribute else {}
    task = load_task(spec["task"])
    seeds = sorted(entry["result"]["seeds"], key=int)

    def configs(seed: str):
        base = list(config["overrides"]) + spec["data"](run_root / spec["world"]) + [f"seed={seed}"] + spec["only"]
        return {"real": load_config(config["config"], base),
                "synthetic_style": load_config(config["config"], base + synthetic_style)} | {
            style: load_config(config["config"], base + overrides) for style, overrides in effect_styles.items()}

    def scores(cfgs, networks) -> dict[str, dict[str, float]]:
        scored = {}
        for style, cfg in cfgs.items():
            table = task.evaluate(cfg, networks, out / "eval")[spec["benchmark"]]["metrics"]
            scored[style] = {key: float(table[key]) for key, _ in METRICS[stage]}
        return scored

    first = configs(seeds[0])
    rows = {spec["floor"]: {"-": scores(first, spec["floor_networks"](first["real"]))}}
    for seed in seeds:
        cfgs = configs(seed)
        result_of_seed = entry["result"]["seeds"][seed]
        checkpoints = dict(result_of_seed["checkpoints"])
        if (result_of_seed.get("pretrained") or {}).get("task_network"):  # T at the end of stage 2
            checkpoints[PRETRAINED_ROW] = result_of_seed["pretrained"]["task_network"]
        for name, checkpoint in checkpoints.items():
            if checkpoint:
                networks, _, _ = load_networks(checkpoint, spec["task"])
                rows.setdefault(name, {})[seed] = scores(cfgs, networks)
    result = {"run": str(run_root), "stage": stage, "benchmark": spec["benchmark"], "rows": rows,
              "summary": summarise(rows, stage)}
    if effect_styles:
        result["attribution"] = attribution(rows, stage, list(effect_styles))
    write_json(out / f"{stage}.json", result)
    write_text(out / f"{stage}.md", markdown(result))
    return result


def summarise(rows: dict[str, dict[str, dict]], stage: str) -> dict[str, dict[str, dict]]:
    """Per row and metric: mean over seeds of real, synthetic-style and the paired gap, with the gap's SE."""
    summary = {}
    for name, per_seed in rows.items():
        summary[name] = {}
        for key, _ in METRICS[stage]:
            real = np.array([entry["real"][key] for entry in per_seed.values()])
            synthetic = np.array([entry["synthetic_style"][key] for entry in per_seed.values()])
            gap = real - synthetic
            se = float(gap.std(ddof=1) / np.sqrt(len(gap))) if len(gap) > 1 else None
            summary[name][key] = {"real": float(real.mean()), "synthetic_style": float(synthetic.mean()),
                                  "gap": float(gap.mean()), "gap_se": se, "seeds": len(gap)}
    return summary


def attribution(rows: dict[str, dict[str, dict]], stage: str, styles: list[str]) -> dict[str, dict[str, dict]]:
    """Per row and effect style ("without <effect>"): the effect's cost on the headline metric, error(real) -
    error(real without the effect), mean over seeds with its SE (positive = the effect makes the row worse)."""
    key = METRICS[stage][0][0]
    result = {}
    for name, per_seed in rows.items():
        result[name] = {}
        for style in styles:
            cost = np.array([entry["real"][key] - entry[style][key] for entry in per_seed.values()])
            se = float(cost.std(ddof=1) / np.sqrt(len(cost))) if len(cost) > 1 else None
            result[name][style] = {"metric": key, "cost": float(cost.mean()), "cost_se": se,
                                   "without": float(np.mean([entry[style][key] for entry in per_seed.values()]))}
    return result


def markdown(result: dict) -> str:
    metrics = METRICS[result["stage"]]
    lines = [f"Domain gap on `{result['benchmark']}`: the same test scenes and ground truth rendered in the real "
             "style (the test set) and in the synthetic style; mean over training seeds, gap = real - synthetic "
             "style (± standard error over seeds).", "",
             "| row | seeds | " + " | ".join(f"{label}: real / synthetic style / gap" for _, label in metrics) + " |",
             "|---|---|" + "---|" * len(metrics)]
    for name, row in result["summary"].items():
        cells = []
        for key, _ in metrics:
            m = row[key]
            se = f" ± {m['gap_se']:.3f}" if m["gap_se"] is not None else ""
            cells.append(f"{m['real']:.3f} / {m['synthetic_style']:.3f} / {m['gap']:+.3f}{se}")
        lines.append(f"| {name} | {next(iter(row.values()))['seeds']} | " + " | ".join(cells) + " |")
    if result.get("attribution"):
        styles = list(next(iter(result["attribution"].values())))
        label = metrics[0][1]
        lines += ["", f"Attribution: {label} in the real style with one effect switched off (same faces, lights and "
                  "ground truth), and the effect's cost = real - without it (± SE over seeds; positive = the effect "
                  "hurts the row).", "",
                  "| row | " + " | ".join(f"{style}: {label} / cost" for style in styles) + " |",
                  "|---|" + "---|" * len(styles)]
        for name, row in result["attribution"].items():
            cells = []
            for style in styles:
                m = row[style]
                se = f" ± {m['cost_se']:.2f}" if m["cost_se"] is not None else ""
                cells.append(f"{m['without']:.2f} / {m['cost']:+.2f}{se}")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo.domain_gap", description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a finished demo or study folder (runs/demo, runs/demo-study)")
    parser.add_argument("--out", default=None, help="output folder (default <run>/domain_gap)")
    parser.add_argument("--stage", nargs="+", default=list(TASKS), choices=list(TASKS), help="chapter stages")
    parser.add_argument("--attribute", action="store_true",
                        help="faces: also score the real style with each effect switched off (the gap's attribution)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    for stage in args.stage:
        print(markdown(measure(args.run, stage, args.out, attribute=args.attribute and "effects" in TASKS[stage])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
