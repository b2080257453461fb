"""`<out>/REPORT.md`: the miniature's tables beside the dissertation's, sanity floors, verdicts, figures.

Every number comes from the metrics files the chapter stages and the floor stages wrote; rows are mean ± std
over the seeds run (sample std; no ± for a single seed). Each table carries trivial-baseline rows (floors,
demo/floors.py) scored by the same evaluation code, and the report says whether each trained row beats them.
Each claim of the dissertation is decided by the rule of demo/verdicts.py on its headline metric: paired
margins over seeds, *reproduced* / *contradicted* beyond two standard errors, else *inconclusive*; a claim
whose models do not both beat their floor is *untestable here*. Evaluation noise (bootstrap over test images,
demo/per_image.py) is shown beside each margin; with one seed it is the rule's only noise (indicative).
A claim whose stage did not finish is "not run: <reason>". Nothing here is tuned or hard-coded.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from common.checkpoints import write_json, write_text
from common.config import EXPERIMENTS_ROOT, REPO_ROOT
from common.results import mean_and_std, write_results_table
from demo.verdicts import (
    CONTRADICTED,
    INCONCLUSIVE,
    REPRODUCED,
    beats_floor,
    bootstrap_se,
    claim_verdict,
    improvement,
    mean_statistic,
    miou_best_statistic,
)

DEPTH_COLUMNS = ["abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3"]
MAKE3D_COLUMNS = ["abs_rel", "sq_rel", "rmse"]
STUDY_VERDICTS = REPO_ROOT / "docs" / "demo-study.json"
STUDY_NAME = "demo-study"  # the main study's page: docs/<STUDY_NAME>.md (.json, figures in docs/<STUDY_NAME>/)
STUDY_REPORT = f"docs/{STUDY_NAME}.md"
# the main study's second study (seeds 100-102, the stability check): cited in a second column
SECOND_STUDY_NAME = "demo-study-seed100"
SECOND_STUDY_VERDICTS = REPO_ROOT / "docs" / f"{SECOND_STUDY_NAME}.json"
SECOND_STUDY_REPORT = f"docs/{SECOND_STUDY_NAME}.md"
DEPTH_FLOOR = "Floor: per-pixel mean training depth"  # names as in demo/floors.py (not imported: torch-free)
FACES_FLOOR = "Floor: frontal normal, mean training lighting"
ALL_FOREGROUND = "Floor: all foreground"
IMAGE_ONLY = "Floor: image only (prompt ignored)"
SEGMENTATION_COLUMN_KEYS = {"mIoU": "miou_best", "IoU_FG": "fgiou_best", "AP": "ap"}
CONSTANT = "-"  # the seed label of floors that have no training seed


def _num(value) -> str:
    return f"{value:.0f}" if value is not None else "–"


def _load_yaml(path: Path) -> dict:
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True) if path.is_file() else {}


def _ok(status: Mapping, name: str) -> bool:
    return status.get(name, {}).get("status") in ("done", "cached")


def _why(status: Mapping, name: str) -> str:
    entry = status.get(name, {})
    return f"{entry.get('status', 'not run')}" + (f": {entry['reason']}" if entry.get("reason") else "")


def aggregate(per_seed: Sequence[Mapping[str, float]], columns: Sequence[str],
              seeds: Sequence[str] | None = None) -> dict[str, Any]:
    """{column: {"mean", "std", "n", "values", "seeds"}} over the seeds that have the column (std None for a
    single seed). `values[i]` belongs to `seeds[i]` (default "0", "1", ...), so claims can pair by seed."""
    seeds = [str(s) for s in seeds] if seeds is not None else [str(k) for k in range(len(per_seed))]
    out = {}
    for column in columns:
        pairs = [(seed, float(m[column])) for seed, m in zip(seeds, per_seed) if m.get(column) is not None]
        if pairs:
            out[column] = mean_and_std([v for _, v in pairs]) | {"values": [v for _, v in pairs],
                                                                 "seeds": [s for s, _ in pairs]}
            if len(pairs) == 1:
                out[column]["std"] = None
    return out


def _seeded(result: Mapping, getter) -> tuple[list[str], list[dict]]:
    seeds, values = [], []
    for seed in sorted(result.get("seeds", {})):
        try:
            values.append(getter(result["seeds"][seed]))
            seeds.append(str(seed))
        except (KeyError, TypeError, StopIteration):
            continue
    return seeds, values


def _seed_values(result: Mapping, getter) -> list[dict]:
    return _seeded(result, getter)[1]


def _floor_row(name: str, metrics: Mapping, columns: Sequence[str], seeds: Sequence[str] = (CONSTANT,)) -> dict:
    per_seed = metrics if isinstance(metrics, list) else [metrics]
    return {"method": name, "source": "floor", "floor": True, **aggregate(per_seed, columns, seeds)}


# ------------------------------------------------------------------------------------------------ tables

TABLE_SPECS: dict[str, dict] = {}  # table key -> {"stage", "benchmark", "floors", "per_image_metric"}


def depth_tables(result: Mapping, out: Path, floors: Mapping | None = None) -> tuple[list[Path], dict]:
    paper = _load_yaml(EXPERIMENTS_ROOT / "chapter2" / "paper_tables_depth.yaml")
    rows_seen = sorted({row for seed in result.get("seeds", {}).values() for row in seed.get("rows", {})})
    floor_results = (floors or {}).get("floors", {})

    def ours(benchmark: str, columns: Sequence[str], rows: Sequence[str]) -> list[dict]:
        table = []
        for row in rows:
            seeds, values = _seeded(result, lambda s, r=row: s["rows"][r][benchmark]["metrics"])
            if values:
                table.append({"method": row, **aggregate(values, columns, seeds)})
        for name, benchmarks in floor_results.items():
            if benchmark in benchmarks:
                table.append(_floor_row(name, benchmarks[benchmark]["metrics"], columns))
        return table

    ablation = ["No SharinGAN, no reconstruction", "SharinGAN, no reconstruction", "SharinGAN (proposed)"]
    main_rows = ["All synthetic (baseline)", "SharinGAN (proposed)"]
    specs = [
        ("table_2_1_cap80", "Table 2.1 (cap 80 m): KITTI-layout real test drives", "kitti_eigen_cap80",
         DEPTH_COLUMNS, main_rows),
        ("table_2_1_cap50", "Table 2.1 (cap 50 m): KITTI-layout real test drives", "kitti_eigen_cap50",
         DEPTH_COLUMNS, main_rows),
        ("table_2_2", "Table 2.2: Make3D-style test set (< 70 m, central crop), not trained on it", "make3d_c1",
         MAKE3D_COLUMNS, main_rows),
        ("table_2_5", "Table 2.5: ablation on the KITTI-layout test drives (cap 50 m)", "kitti_eigen_cap50",
         DEPTH_COLUMNS, ablation),
        ("table_2_6", "Table 2.6: ablation on the Make3D-style test set (70 m)", "make3d_c1", MAKE3D_COLUMNS, ablation),
    ]
    paths, rows_by_table = [], {}
    for key, title, benchmark, columns, rows in specs:
        TABLE_SPECS[key] = {"stage": "depth", "floor_stage": "floors_depth", "benchmark": benchmark,
                            "floors": [DEPTH_FLOOR], "per_image_metric": "abs_rel"}
        table = ours(benchmark, columns, [r for r in rows if r in rows_seen])
        rows_by_table[key] = {row["method"]: row for row in table}
        protocol = _seed_values(result, lambda s, b=benchmark: next(iter(s["rows"].values()))[b]["protocol"])
        paths.append(write_results_table(out / key, title, table, columns, paper.get(key, {}).get("rows", []),
                                         protocol=protocol[0] if protocol else None,
                                         notes=f"Ours: mean ± std over {len(result.get('seeds', {}))} seed(s). "
                                               "Floor rows (source 'floor'): a trivial predictor through the same "
                                               "evaluation code."))
    return paths, rows_by_table


def _face_metrics(row: Mapping, benchmark: str) -> tuple[Mapping, Mapping | None]:
    """(metrics, protocol) of one face benchmark, nested ({"metrics", "protocol"}) or flat."""
    value = row[benchmark]
    if "metrics" in value:
        return value["metrics"], value.get("protocol")
    return value, row.get(f"{benchmark}_protocol")


def face_tables(result: Mapping, out: Path, floors: Mapping | None = None) -> tuple[list[Path], dict]:
    paper = _load_yaml(EXPERIMENTS_ROOT / "chapter2" / "paper_tables_faces.yaml")
    rows_seen = sorted({row for seed in result.get("seeds", {}).values() for row in seed.get("rows", {})})
    floor_results = (floors or {}).get("floors", {})
    paths, rows_by_table = [], {}
    for key, benchmark, metric in (("table_2_3", "photoface", "mae_deg"), ("table_2_4", "multipie", "top1")):
        TABLE_SPECS[key] = {"stage": "faces", "floor_stage": "floors_faces", "benchmark": benchmark,
                            "floors": [FACES_FLOOR], "per_image_metric": metric}
        spec = paper.get(key, {})
        columns = list(spec.get("columns", []))
        table = []
        for row in rows_seen:
            seeds, values = _seeded(result, lambda s, r=row, b=benchmark: _face_metrics(s["rows"][r], b)[0])
            if values:
                table.append({"method": row, **aggregate(values, columns, seeds)})
        for name, benchmarks in floor_results.items():
            if benchmark in benchmarks:
                table.append(_floor_row(name, benchmarks[benchmark]["metrics"], columns))
        rows_by_table[key] = {row["method"]: row for row in table}
        protocol = _seed_values(result, lambda s, b=benchmark: _face_metrics(next(iter(s["rows"].values())), b)[1])
        paths.append(write_results_table(out / key, spec.get("title", key) + " (miniature: face world)", table,
                                         columns, spec.get("rows", []), protocol=protocol[0] if protocol else None,
                                         notes=f"Ours: mean ± std over {len(result.get('seeds', {}))} seed(s). "
                                               + str(spec.get("notes", ""))))
    return paths, rows_by_table


CHAPTER3_SPECS = (  # (paper table key, dataset result key, our methods)
    ("table_3_1", "phrasecut", ("RGBNet", "ZNet", "LD-ZNet")),
    ("table_3_2", "aigi", ("RGBNet", "ZNet", "LD-ZNet")),
    ("table_3_3_refcoco", "refcoco", ("RGBNet", "ZNet", "LD-ZNet")),
    ("table_3_3_refcoco_plus", "refcoco_plus", ("RGBNet", "ZNet", "LD-ZNet")),
    ("table_3_3_refcocog", "refcocog", ("RGBNet", "ZNet", "LD-ZNet")),
    ("table_3_4", "phrasecut", ("LD-ZNet with concatenation", "LD-ZNet")),
)
ALIASES = {"LD-ZNet with cross-attention": "LD-ZNet"}  # table name -> the name in the stage results


def segmentation_tables(result: Mapping, out: Path, floors: Mapping | None = None) -> tuple[list[Path], dict]:
    paper = _load_yaml(EXPERIMENTS_ROOT / "chapter3" / "paper_tables.yaml")
    floor_results = (floors or {}).get("floors", {})
    paths, rows_by_table = [], {}
    for key, dataset, methods in CHAPTER3_SPECS:
        TABLE_SPECS[key] = {"stage": "ldznet", "floor_stage": "floors_segmentation", "benchmark": dataset,
                            "floors": [ALL_FOREGROUND, IMAGE_ONLY], "per_image_metric": "iou_curves"}
        spec = paper.get(key, {})
        columns = list(spec.get("columns", ["mIoU", "IoU_FG", "AP"]))
        metric_keys = {c: (f"{m}_best" if m != "ap" else "ap") for c, m in spec.get("metrics", {}).items()}
        metric_keys = {c: metric_keys.get(c, SEGMENTATION_COLUMN_KEYS.get(c, c)) for c in columns}
        table = []
        for method in methods:
            seeds, values = _seeded(result, lambda s, d=dataset, m=method, keys=metric_keys, cols=columns: {
                column: s["results"][d]["metrics"][m][keys[column]] for column in cols})
            if values:
                name = "LD-ZNet with cross-attention" if key == "table_3_4" and method == "LD-ZNet" else method
                table.append({"method": name, **aggregate(values, columns, seeds)})
        for name, by_seed in floor_results.get(dataset, {}).items():
            seeds = sorted(by_seed)
            per_seed = [{c: by_seed[s][metric_keys[c]] for c in columns} for s in seeds]
            table.append(_floor_row(name, per_seed, columns, seeds))
        rows_by_table[key] = {row["method"]: row for row in table}
        protocol = _seed_values(result, lambda s, d=dataset: s["results"][d]["protocol"])
        paths.append(write_results_table(out / key, spec.get("title", key) + " (miniature: shape world)", table,
                                         columns, [{k: v for k, v in r.items() if k != "threshold"}
                                                   for r in spec.get("rows", [])],
                                         protocol=protocol[0] if protocol else None, digits=1,
                                         notes=f"Ours: mean ± std over {len(result.get('seeds', {}))} seed(s); "
                                               "mIoU and IoU_FG are the best over the 0.02-spaced threshold sweep. "
                                               "Floors: all foreground (scores the mean foreground fraction, "
                                               "large in the shape world: sky, grass, water, sand; AP 0) and an "
                                               "image-only model (same class and training, one fixed phrase: "
                                               "what the image alone gives)."))
    return paths, rows_by_table


# ------------------------------------------------------------------------------------------- noise

class PerImage:
    """Per-image values of every row (the floor stages' per_image.npz) and bootstrap SEs of paired margins."""

    def __init__(self, arrays: Mapping[str, Any] | None = None, resamples: int = 500) -> None:
        self.arrays = dict(arrays or {})
        self.resamples = resamples
        self._cache: dict[tuple, float] = {}

    @classmethod
    def from_status(cls, status: Mapping) -> PerImage:
        from demo.per_image import load_per_image

        arrays = {}
        for stage in ("floors_depth", "floors_faces", "floors_segmentation"):
            path = status.get(stage, {}).get("result", {}).get("per_image") if _ok(status, stage) else None
            if path and Path(path).is_file():
                arrays.update(load_per_image(path))
        return cls(arrays)

    def values(self, row: str, seed: str, benchmark: str, metric: str):
        row = ALIASES.get(row, row)
        for label in (seed, CONSTANT):
            found = self.arrays.get(f"{row}|{label}|{benchmark}|{metric}")
            if found is not None:
                return found
        return None

    def margin_se(self, a: str, b: str, seeds: Sequence[str], benchmark: str, metric: str) -> float | None:
        """Root mean square over seeds of the bootstrap SE of statistic(a) - statistic(b) (same images)."""
        key = (a, b, tuple(seeds), benchmark, metric)
        if key not in self._cache:
            statistic = miou_best_statistic if metric == "iou_curves" else mean_statistic
            ses = []
            for seed in seeds:
                x, y = self.values(a, seed, benchmark, metric), self.values(b, seed, benchmark, metric)
                if x is not None and y is not None and x.shape == y.shape:
                    ses.append(bootstrap_se(x, y, statistic, self.resamples, seed=len(ses)))
            finite = [s for s in ses if math.isfinite(s)]
            self._cache[key] = math.sqrt(sum(s * s for s in finite) / len(finite)) if finite else None
        return self._cache[key]


# ------------------------------------------------------------------------------------------------ claims

def _by_seed(row: Mapping, metric: str) -> dict[str, float]:
    cell = row.get(metric) or {}
    return dict(zip(cell.get("seeds", []), cell.get("values", [])))


def floor_check(table: Mapping, row: str, metric: str, floors: Sequence[str], noise: PerImage, spec: Mapping) -> dict:
    """Whether `row` beats every floor row of its table on `metric` (demo.verdicts.beats_floor)."""
    present = [f for f in floors if f in table and metric in table[f]]
    if not present:
        return {"beats": None, "detail": "no floor row (floor stage not run)"}
    model = _by_seed(table[row], metric)
    checks = {}
    for floor in present:
        floor_values = _by_seed(table[floor], metric)
        seeds = [s for s in model if s in floor_values or CONSTANT in floor_values]
        if not seeds:
            checks[floor] = {"beats": None, "detail": "no common seed"}
            continue
        paired = [floor_values.get(s, floor_values.get(CONSTANT)) for s in seeds]
        se = noise.margin_se(row, floor, seeds, spec["benchmark"], spec["per_image_metric"])
        checks[floor] = beats_floor([model[s] for s in seeds], paired, metric, se)
    states = [c.get("beats") for c in checks.values()]
    beats = None if any(s is None for s in states) else all(states)
    return {"beats": beats, "floors": checks}


def judge(table: Mapping, better: str, worse: str, metric: str, metrics: Sequence[str], table_key: str,
          noise: PerImage) -> dict:
    """The claim 'better beats worse' on the headline `metric` of table `table_key` (demo/verdicts.py)."""
    spec = TABLE_SPECS.get(table_key, {})
    b, w = table.get(better), table.get(worse)
    if not b or not w or metric not in b or metric not in w:
        return {"verdict": "not run", "detail": f"missing rows for {metric}"}
    bv, wv = _by_seed(b, metric), _by_seed(w, metric)
    seeds = [s for s in bv if s in wv]
    if not seeds:
        return {"verdict": "not run", "detail": "no seed shared by both rows"}
    evaluation_se = noise.margin_se(better, worse, seeds, spec.get("benchmark", ""), spec.get("per_image_metric", ""))
    floors = {name: floor_check(table, name, metric, spec.get("floors", []), noise, spec) for name in (better, worse)}
    result = claim_verdict([bv[s] for s in seeds], [wv[s] for s in seeds], metric,
                           floors[better]["beats"] is not False, floors[worse]["beats"] is not False, evaluation_se)
    per_metric = {}
    for other in metrics:
        bo, wo = _by_seed(b, other), _by_seed(w, other)
        common = [s for s in bo if s in wo]
        if common:
            per_metric[other] = sum(improvement(bo[s], wo[s], other) for s in common) / len(common)
    return result | {"metric": metric, "values": (b[metric]["mean"], w[metric]["mean"]), "per_metric": per_metric,
                     "rows": (better, worse), "floor_checks": floors, "table": table_key}


def probe_claim(probe: Mapping) -> dict:
    grid = probe.get("ap", {})
    if not grid:
        return {"verdict": "not run", "detail": "no probe grid"}
    cells = {(int(b.removeprefix("block")), int(t.removeprefix("t="))): v
             for b, row in grid.items() for t, v in row.items()}
    region = {k: v for k, v in cells.items() if 6 <= k[0] <= 10 and 300 <= k[1] <= 500}
    rest = {k: v for k, v in cells.items() if k not in region}
    if not region or not rest:
        return {"verdict": "not run", "detail": "the probe grid does not cover blocks 6-10 x t 300-500"}
    best = max(cells, key=cells.get)
    inside = sum(region.values()) / len(region)
    outside = sum(rest.values()) / len(rest)
    return {"verdict": "reproduced" if best in region else "not reproduced", "margin": inside - outside,
            "metric": "AP", "values": (inside, outside), "best_cell": best, "best_ap": cells[best], "n": 1,
            "basis": "one probe grid (first seed), no noise estimate: indicative"}


def claims(status: Mapping, depth: dict, faces: dict, seg: dict, noise: PerImage | None = None) -> list[dict]:
    noise = noise if noise is not None else PerImage()
    out = []

    def add(text: str, stage: str, result: dict) -> None:
        if not _ok(status, stage):
            result = {"verdict": f"not run: stage {stage} {_why(status, stage)}"}
        out.append({"claim": text, "stage": stage, **result})

    def claim(tables: dict, key: str, better: str | None, worse: str | None, metric: str,
              metrics: Sequence[str]) -> dict:
        if better is None or worse is None:
            return {"verdict": "not run", "detail": "missing rows"}
        return judge(tables.get(key, {}), better, worse, metric, metrics, key, noise)

    add("SharinGAN beats no SharinGAN (KITTI-layout, cap 50 m; Table 2.5)", "depth",
        claim(depth, "table_2_5", "SharinGAN (proposed)", "No SharinGAN, no reconstruction", "abs_rel",
              DEPTH_COLUMNS))
    add("SharinGAN beats no SharinGAN (Make3D-style; Table 2.6)", "depth",
        claim(depth, "table_2_6", "SharinGAN (proposed)", "No SharinGAN, no reconstruction", "abs_rel",
              MAKE3D_COLUMNS))
    add("SharinGAN beats the all-synthetic baseline (KITTI-layout, cap 80 m; Table 2.1)", "depth",
        claim(depth, "table_2_1_cap80", "SharinGAN (proposed)", "All synthetic (baseline)", "abs_rel", DEPTH_COLUMNS))
    add("Reconstruction loss helps (KITTI-layout, cap 50 m; Table 2.5)", "depth",
        claim(depth, "table_2_5", "SharinGAN (proposed)", "SharinGAN, no reconstruction", "abs_rel", DEPTH_COLUMNS))
    add("Reconstruction loss helps (Make3D-style; Table 2.6)", "depth",
        claim(depth, "table_2_6", "SharinGAN (proposed)", "SharinGAN, no reconstruction", "abs_rel", MAKE3D_COLUMNS))
    t23 = faces.get("table_2_3", {})
    ours_face = next((k for k in t23 if k.startswith("SharinGAN")), None)
    base_face = next((k for k in t23 if not k.startswith(("SharinGAN", "Floor"))), None)
    add("SharinGAN beats SfSNet on face normals (Photoface-layout; Table 2.3)", "faces",
        claim(faces, "table_2_3", ours_face, base_face, "mae_deg", ["mae_deg", "lt20", "lt25", "lt30"]))
    add("SharinGAN beats SfSNet on lighting (Multi-PIE-layout; Table 2.4)", "faces",
        claim(faces, "table_2_4", ours_face, base_face, "top1", ["top1", "top2", "top3"]))
    for key, label, metrics in (("table_3_1", "PhraseCut-layout; Table 3.1", ["mIoU", "IoU_FG", "AP"]),
                                ("table_3_2", "AIGI-layout; Table 3.2", ["mIoU", "AP"]),
                                ("table_3_3_refcoco", "RefCOCO-layout; Table 3.3", ["mIoU", "AP"]),
                                ("table_3_3_refcoco_plus", "RefCOCO+-layout; Table 3.3", ["mIoU", "AP"]),
                                ("table_3_3_refcocog", "G-Ref-layout; Table 3.3", ["mIoU", "AP"])):
        add(f"ZNet beats RGBNet ({label})", "ldznet", claim(seg, key, "ZNet", "RGBNet", "mIoU", metrics))
        add(f"LD-ZNet beats ZNet ({label})", "ldznet", claim(seg, key, "LD-ZNet", "ZNet", "mIoU", metrics))
    add("Cross-attention beats concatenation (PhraseCut-layout; Table 3.4)", "ldznet",
        claim(seg, "table_3_4", "LD-ZNet with cross-attention", "LD-ZNet with concatenation", "mIoU",
              ["mIoU", "IoU_FG", "AP"]))
    probe = status.get("probe", {}).get("result", {})
    add("Blocks 6-10 at t = 300-500 score best (Fig 3.4: best cell inside; margin = mean AP inside - outside)",
        "probe", probe_claim(probe))
    return out


def _g(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.3g}"


def claim_line(claim: Mapping, *studies: Mapping[str, str] | None) -> str:
    """One row of the claims table; each study given (claim -> verdict) adds a cell (– where it lacks the claim)."""
    verdict = claim["verdict"]
    study_cell = "".join(f" {study.get(claim['claim'], '–')} |" for study in studies if study is not None)
    if "margin" not in claim:
        return f"| {claim['claim']} | {verdict} | – |{study_cell}"
    better, worse = claim["values"]
    extra = f" (best cell: block {claim['best_cell'][0]}, t = {claim['best_cell'][1]}, AP {claim['best_ap']:.1f})" \
        if "best_cell" in claim else ""
    noise = ""
    if claim.get("seed_se") is not None:
        noise += f", seed SE {_g(claim['seed_se'])}"
    if claim.get("evaluation_se") is not None:
        noise += f", evaluation SE {_g(claim['evaluation_se'])}"
    others = ""
    if claim.get("per_metric"):
        others = "; other metrics: " + ", ".join(f"{m} {v:+.3g}" for m, v in claim["per_metric"].items()
                                                  if m != claim["metric"])
    flags = f" ({claim['basis']})" if claim.get("basis") else ""
    if claim.get("not_plateaued"):
        flags += f"; not plateaued: {', '.join(claim['not_plateaued'])}"
    return (f"| {claim['claim']} | **{verdict}**{flags} | {claim['metric']} {claim['margin']:+.3g}{noise} "
            f"({better:.3g} vs {worse:.3g}, n = {claim.get('n', 1)}){extra}{others} |{study_cell}")


def floor_lines(claim_list: Sequence[Mapping]) -> list[str]:
    """One line per (table, trained row): does it beat its floor(s)?"""
    seen, lines = set(), ["| table | row | beats the floor? | margin over each floor (headline metric) |",
                          "|---|---|---|---|"]
    for claim in claim_list:
        for row, check in (claim.get("floor_checks") or {}).items():
            key = (claim["table"], row)
            if key in seen:
                continue
            seen.add(key)
            state = {True: "yes", False: "**no**", None: "–"}[check.get("beats")]
            margins = "; ".join(f"{name}: {c['margin']:+.3g} ({c['verdict']}, SE {_g(c.get('se'))})"
                                for name, c in (check.get("floors") or {}).items() if "margin" in c)
            lines.append(f"| {claim['table']} | {row} | {state} | {margins or check.get('detail', '')} |")
    return lines if len(lines) > 2 else []


# ------------------------------------------------------------------------------------------------ report

def tiny_ldm_summary(t: Mapping) -> str:
    return (f"{t.get('n_images')} captioned {t.get('image_size')}px images; VAE L1 (held-out, [-1, 1]) "
            f"{t.get('vae_l1_last64', float('nan')):.3f}, latent scaling {t.get('scaling_factor', 0):.3f}; text "
            f"encoder held-out caption->image retrieval top-1 {t.get('text_retrieval_top1_heldout', 0):.2f} "
            f"(chance {t.get('text_retrieval_chance', 0):.3f}); UNet DDPM loss {t.get('unet_first_loss', 0):.3f} "
            f"-> {t.get('unet_final_loss', 0):.3f}. Saved in the diffusers layout and loaded back through "
            "`ldznet.stable_diffusion.load_stable_diffusion`.")


def _table_text(paths: Sequence[Path]) -> str:
    return "\n".join(Path(p).read_text() for p in paths)


def study_verdicts(path: Path = STUDY_VERDICTS) -> dict | None:
    """The committed study's machine-readable verdicts ({"claims": {claim: verdict}, ...}), or None."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except ValueError:
        return None
    return data if isinstance(data.get("claims"), dict) else None


def _agreement_warnings(status: Mapping) -> list[str]:
    warnings = []
    for stage in ("floors_depth", "floors_faces", "floors_segmentation"):
        for key, metrics in status.get(stage, {}).get("result", {}).get("agreement", {}).items():
            for metric, pair in metrics.items():
                table, mean = pair["table"], pair["per_image_mean"]
                tolerance = 0.02 * abs(table) + 1e-6 if metric == "mae_deg" else 1e-3 * abs(table) + 1e-6
                if not abs(table - mean) <= tolerance:
                    warnings.append(f"{key.rstrip('|')} {metric}: table {table:.4g}, per-image {mean:.4g}")
    return warnings


def _code_version() -> str:
    from common.runs import git_state

    state = git_state()
    sha = state.get("sha") or "unknown"
    return f"{sha}{' (uncommitted changes)' if state.get('dirty') else ''}"


def _learning_curve_lines(status: Mapping, cfg, root: Path, claim_list: list[dict]) -> list[str]:
    from demo.study import learning_curves, learning_curves_figure

    plateau = OmegaConf.select(cfg, "study.plateau", default=None) or {}
    tail, tolerance = float(plateau.get("tail", 1 / 3)), float(plateau.get("tolerance", 0.1))
    noise_allowance = float(plateau.get("noise_allowance", 2.0))
    try:
        curves = learning_curves(status, tail, tolerance, noise_allowance)
    except Exception as error:  # noqa: BLE001 - the report still gets written, saying why
        return ["## Learning curves", "", f"Not drawn: {type(error).__name__}: {error}", ""]
    if not curves:
        return []
    write_json(root / "learning_curves.json", curves)
    figure = learning_curves_figure(curves, root / "figures" / "learning_curves.png")
    lines = ["## Learning curves", "",
             "Validation metric of every trained row (training loss where a row has no validation), one line per "
             f"seed. Plateau: the best of the 3-point moving mean over the last {tail:.2f} of the steps improves "
             f"on the best before it by at most {tolerance:.2f} x the curve's range, or by at most "
             f"{noise_allowance:.1f} x its noise (a gain within the validation noise; demo/study.py).", ""]
    if figure is not None:
        lines += [f"![learning curves]({figure.relative_to(root).as_posix()})", ""]
    lines += ["| chapter | row | curve | points | last step | plateaued |", "|---|---|---|---|---|---|"]
    for chapter, rows in curves.items():
        for row, entry in rows.items():
            points = ", ".join(str(c["plateau"]["points"]) for c in entry["seeds"].values())
            # where each seed's curve ends: the configured length, or earlier where schedule.stop_at_plateau stopped it
            ends = ", ".join(str(int(c["steps"][-1])) for c in entry["seeds"].values())
            state = {True: "yes", False: "**no**", None: "too few points"}[entry["plateaued"]]
            lines.append(f"| {chapter} | {row} | {entry['tag']} | {points} | {ends} | {state} |")
    flag_unplateaued(curves, claim_list)
    return lines + [""]


def flag_unplateaued(curves: Mapping, claim_list: list[dict]) -> None:
    """Mark each claim with its rows whose learning curve has not plateaued (`claim["not_plateaued"]`). Rows are
    looked up in the claim's own chapter (its table's stage): depth and faces both have a "SharinGAN (proposed)"
    row (pages generated before this lookup took the flag from whichever chapter came last, the faces one)."""
    for claim in claim_list:
        chapter = TABLE_SPECS.get(claim.get("table"), {}).get("stage")
        rows = [ALIASES.get(r, r) for r in claim.get("rows", ())]
        missing = [r for r in rows if curves.get(chapter, {}).get(r, {}).get("plateaued") is False]
        if missing:
            claim["not_plateaued"] = missing


def write_report(cfg, status: Mapping, seconds: float = 0.0, figures: bool = True, command: str | None = None) -> Path:
    root = Path(str(cfg.out))
    tables_dir = root / "tables"
    seeds = int(cfg.seeds)
    study_mode = OmegaConf.select(cfg, "study.enabled", default=False)
    command = command or ("python -m demo --study" if study_mode else "python -m demo")
    study = None if study_mode else study_verdicts()
    second_study = None if study_mode else study_verdicts(SECOND_STUDY_VERDICTS)
    reused = sum(entry.get("status") == "cached" for entry in status.values())
    reuse = f"{reused} of {len(status)} stages reused from an earlier run" if reused else "every stage ran"
    device = "" if str(cfg.get("device") or "cpu") == "cpu" else f", device = {cfg.device}"  # demo.plan.device_of
    lines = ["# The dissertation in miniature", "",
             f"Generated {_dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds')} by `{command}` "
             f"(config: seeds = {seeds}, jobs = {int(cfg.jobs)}, threads = {int(cfg.threads)}{device}; "
             f"code version {_code_version()}); this run "
             f"took {seconds:.0f} s ({reuse}). Procedural worlds, tiny networks, minutes of CPU: these "
             "numbers test the code path and the *direction* of the dissertation's claims, not its values; the "
             "paper's numbers need the real datasets and weights (docs/demo.md).", ""]
    if str(cfg.get("chapter3_weights") or "final") == "best":
        lines += ["**Chapter-3 rows are scored at early stopping**: each run's `best.ckpt`, the EMA weights at its "
                  "validation point with the highest PhraseCut-val mIoU (`chapter3_weights=best`), not its final "
                  "weights. The floors' image-only model too.", ""]
    if seeds < 2:
        lines += ["**The verdicts below are indicative**: one training seed, so the rule's noise is the evaluation "
                  "noise only (bootstrap over test images); seed-to-seed variation is not measured. "
                  + (f"The study (`make demo-study`, {STUDY_REPORT}: {study.get('seeds', '?')} seeds from seed "
                     f"{study.get('first_seed', '?')}, every validated row trained until it plateaus) gives the "
                     "verdicts to cite; they are in the column \"study verdict\"."
                     + (f" Its second study, the stability check ({SECOND_STUDY_REPORT}: "
                        f"{second_study.get('seeds', '?')} seeds from seed {second_study.get('first_seed', '?')}), "
                        "is in the column \"second study\"." if second_study else "")
                     if study else f"Cite the study's verdicts ({STUDY_REPORT}, `make demo-study`) instead; it has "
                                   "not been published in this checkout yet."), ""]
    lines += ["## Stages", "",
              "Wall time depends on the machine's load; CPU time (all threads and worker processes) does not. A "
              "stage's wall time counts from the moment its inputs were ready, so with several workers it includes "
              "waiting for a free worker, and the stages overlap: their walls are not added up (the run's own wall "
              "time is in the first line).", "",
              "| stage | status | wall from ready (s) | CPU (s) | what |", "|---|---|---|---|---|"]
    cpu_total = 0.0
    for name, entry in status.items():
        seconds_run = entry.get("seconds") if entry.get("seconds") is not None else entry.get("ran_seconds")
        cpu = entry.get("cpu_seconds")
        cpu_total += cpu or 0.0
        state = entry["status"] + (f": {entry['reason']}" if entry.get("reason") else "")
        if entry["status"] == "cached":
            state += " (reused; times of the run that made it)"
        lines.append(f"| {name} | {state} | {_num(seconds_run)} | {_num(cpu)} | {entry.get('description', '')} |")
    lines.append(f"| all stages | | | {cpu_total:.0f} | |")
    depth_rows, face_rows, seg_rows = {}, {}, {}
    sections = []

    def floors_of(stage: str) -> Mapping | None:
        return status[stage]["result"] if _ok(status, stage) else None

    if _ok(status, "depth"):
        paths, depth_rows = depth_tables(status["depth"]["result"], tables_dir, floors_of("floors_depth"))
        sections += ["## Chapter 2: monocular depth (§2.3.1)", "", _table_text(paths)]
    else:
        sections += ["## Chapter 2: monocular depth (§2.3.1)", "", f"Not run: {_why(status, 'depth')}.", ""]
    if _ok(status, "faces"):
        paths, face_rows = face_tables(status["faces"]["result"], tables_dir, floors_of("floors_faces"))
        sections += ["## Chapter 2: face normals and lighting (§2.3.2)", "", _table_text(paths)]
    else:
        sections += ["## Chapter 2: face normals and lighting (§2.3.2)", "", f"Not run: {_why(status, 'faces')}.", ""]
    if _ok(status, "ldznet"):
        paths, seg_rows = segmentation_tables(status["ldznet"]["result"], tables_dir, floors_of("floors_segmentation"))
        sections += ["## Chapter 3: text-based segmentation (§3.4)", "", _table_text(paths)]
    else:
        sections += ["## Chapter 3: text-based segmentation (§3.4)", "", f"Not run: {_why(status, 'ldznet')}.", ""]
    if _ok(status, "tiny_ldm"):
        t = status["tiny_ldm"]["result"]
        sections += ["### The tiny LDM (stand-in for Stable Diffusion v1.4)", "", tiny_ldm_summary(t), ""]
    claim_list = claims(status, depth_rows, face_rows, seg_rows, PerImage.from_status(status))
    curve_lines = _learning_curve_lines(status, cfg, root, claim_list)
    cited = [(header, data.get("claims", {})) for header, data in (("study verdict", study),
                                                                     ("second study", second_study)) if data]
    lines += ["", "## The dissertation's claims on the miniature", "",
              "Rule (demo/verdicts.py): margin = improvement of the claimed-better method on the headline metric, "
              f"paired by training seed; **{REPRODUCED}** when the mean margin exceeds two standard errors of the "
              f"paired differences, **{CONTRADICTED}** when it is below minus two, **{INCONCLUSIVE}** otherwise "
              "(with one seed the standard error is the evaluation noise: a bootstrap over test images of the "
              "paired margin). A claim whose models do not both beat their table's sanity floor is "
              "**untestable here**. The other metrics' mean margins are shown for information.", "",
              "| claim | verdict | margin |" + "".join(f" {header} |" for header, _ in cited),
              "|---|---|---|" + "---|" * len(cited)]
    lines += [claim_line(c, *(column for _, column in cited)) for c in claim_list] + [""]
    floors_table = floor_lines(claim_list)
    lines += ["## Sanity floors", "",
              "Each trained row against its table's floor rows (same evaluation code, demo/floors.py), by the same "
              "rule: it *beats* a floor when its paired margin over the floor is reproduced.", ""]
    lines += floors_table + [""] if floors_table else ["No floor rows (the floor stages did not run).", ""]
    warnings = _agreement_warnings(status)
    if warnings:
        lines += ["**Per-image values disagree with the tables** (the bootstrap may not describe these numbers):", ""]
        lines += [f"- {w}" for w in warnings] + [""]
    lines += curve_lines
    lines += sections
    if figures:
        from demo.figures import make_all

        lines += ["## Figures", ""]
        for caption, path, problem in make_all(root, status, root / "figures"):
            if path is None:
                lines.append(f"- {caption}: {problem}")
            else:
                relative = Path(path).resolve().relative_to(root.resolve()) if Path(path).resolve().is_relative_to(
                    root.resolve()) else Path(path)
                lines += [f"**{caption}**", "", f"![{caption[:40]}]({relative.as_posix()})", ""]
    lines += ["", "## What this does not show", "",
              "The worlds are procedural and tiny; the networks are width-reduced and trained for minutes. The "
              "real numbers (Tables 2.1-2.6, 3.1-3.4) need KITTI, vKITTI, Make3D, SfSNet's data, CelebA, "
              "Photoface, Multi-PIE, PhraseCut, AIGI, RefCOCO and Stable Diffusion v1.4 weights, with the full "
              "configs (`make chapter2-depth`, `make chapter2-normals`, `make chapter3`). See docs/demo.md.", ""]
    write_json(root / "claims.json", claim_list)
    write_json(root / "verdicts.json", {
        "command": command, "code_version": _code_version(), "seeds": seeds, "first_seed": int(cfg.seed),
        "generated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "claims": {c["claim"]: c["verdict"] for c in claim_list},
        "margins": {c["claim"]: {k: c.get(k) for k in ("metric", "margin", "se", "evaluation_se", "n", "basis")}
                    for c in claim_list if "margin" in c}})
    path = root / "REPORT.md"
    write_text(path, "\n".join(lines) + "\n")
    return path


SECOND_STUDY_READING = ("This is the second study of the stability check. The verdicts of both studies side by side, "
                        "and the diagnosis of every claim not reproduced, are in docs/demo-study.md.")


def publish_study(out: str | Path, docs: str | Path = REPO_ROOT / "docs", name: str = STUDY_NAME,
                  reading: str = SECOND_STUDY_READING) -> list[Path]:
    """Copy a study's REPORT.md, verdicts.json and figures to docs/<name>.md, docs/<name>.json and
    docs/<name>/ (figure links rewritten), for committing. The hand-written diagnosis of the claims the
    study does not reproduce (issue: every such claim explained with evidence), docs/demo-study-notes.md, is
    appended to the main study's page, so that re-publishing never loses it; its absence is said in the page.
    Another `name` (the second study of the stability check, e.g. "demo-study-seed100", or a continuation such
    as "demo-study-chapter3-long") gets `reading` instead: what the page is and where its diagnosis is."""
    out, docs = Path(out), Path(docs)
    figures = docs / name
    if figures.exists():
        shutil.rmtree(figures)
    figures.mkdir(parents=True)
    for png in sorted((out / "figures").glob("*.png")):
        shutil.copy2(png, figures / png.name)
    probe = out / "probe" / "probe_ap.png"
    if probe.is_file():
        shutil.copy2(probe, figures / probe.name)
    text = (out / "REPORT.md").read_text().replace("](figures/", f"]({name}/").replace(
        "](probe/probe_ap.png)", f"]({name}/probe_ap.png)")
    notes = docs / "demo-study-notes.md"
    if name != STUDY_NAME:
        text += f"\n\n## Reading this study\n\n{reading}\n"
    else:
        text += "\n\n" + (notes.read_text() if notes.is_file() else
                            "## Why the claims not reproduced are not\n\nNo diagnosis written yet "
                            "(docs/demo-study-notes.md is missing).\n")
    write_text(docs / f"{name}.md", text)
    write_json(docs / f"{name}.json", json.loads((out / "verdicts.json").read_text()))
    return [docs / f"{name}.md", docs / f"{name}.json", *sorted(figures.glob("*.png"))]
