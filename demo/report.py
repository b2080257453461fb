"""`<out>/REPORT.md`: the miniature's tables beside the dissertation's, its figures, and the ordering claims.

Every number comes from the metrics files the chapter stages wrote; rows are mean ± std over the seeds
run (sample std; no ± for a single seed). Each claim of the dissertation is checked on the miniature's
numbers and marked "reproduced" or "not reproduced" with its margin; a claim whose stage did not finish is
"not run: <reason>". Nothing here is tuned or hard-coded: the thresholds of the claims are fixed below.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from common.checkpoints import write_json, write_text
from common.config import EXPERIMENTS_ROOT
from common.results import mean_and_std, write_results_table

DEPTH_COLUMNS = ["abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3"]
MAKE3D_COLUMNS = ["abs_rel", "sq_rel", "rmse"]
LOWER_IS_BETTER = {"abs_rel", "sq_rel", "rmse", "rmse_log", "rmse_log10", "mae_deg"}


def _num(value) -> str:
    return f"{value:.0f}" if value is not None else "–"


def _load_yaml(path: Path) -> dict:
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True) if path.is_file() else {}


def _ok(status: Mapping, name: str) -> bool:
    return status.get(name, {}).get("status") in ("done", "cached")


def _why(status: Mapping, name: str) -> str:
    entry = status.get(name, {})
    return f"{entry.get('status', 'not run')}" + (f": {entry['reason']}" if entry.get("reason") else "")


def aggregate(per_seed: Sequence[Mapping[str, float]], columns: Sequence[str]) -> dict[str, Any]:
    """{column: {"mean", "std", "n"}} over the seeds that have the column (std None for a single seed)."""
    out = {}
    for column in columns:
        values = [float(m[column]) for m in per_seed if m.get(column) is not None]
        if values:
            out[column] = mean_and_std(values)
            if len(values) == 1:
                out[column]["std"] = None
    return out


def _seed_values(result: Mapping, getter) -> list[dict]:
    values = []
    for seed in sorted(result.get("seeds", {})):
        try:
            values.append(getter(result["seeds"][seed]))
        except (KeyError, TypeError):
            continue
    return values


# ------------------------------------------------------------------------------------------------ tables

def depth_tables(result: Mapping, out: Path) -> tuple[list[Path], dict]:
    paper = _load_yaml(EXPERIMENTS_ROOT / "chapter2" / "paper_tables_depth.yaml")
    rows_seen = sorted({row for seed in result.get("seeds", {}).values() for row in seed.get("rows", {})})

    def ours(benchmark: str, columns: Sequence[str], rows: Sequence[str]) -> list[dict]:
        table = []
        for row in rows:
            values = _seed_values(result, lambda s, r=row: s["rows"][r][benchmark]["metrics"])
            if values:
                table.append({"method": row, **aggregate(values, columns)})
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
        table = ours(benchmark, columns, [r for r in rows if r in rows_seen])
        rows_by_table[key] = {row["method"]: row for row in table}
        protocol = _seed_values(result, lambda s, b=benchmark: next(iter(s["rows"].values()))[b]["protocol"])
        paths.append(write_results_table(out / key, title, table, columns, paper.get(key, {}).get("rows", []),
                                         protocol=protocol[0] if protocol else None,
                                         notes=f"Ours: mean ± std over {len(result.get('seeds', {}))} seed(s)."))
    return paths, rows_by_table


def _face_metrics(row: Mapping, benchmark: str) -> tuple[Mapping, Mapping | None]:
    """(metrics, protocol) of one face benchmark, nested ({"metrics", "protocol"}) or flat."""
    value = row[benchmark]
    if "metrics" in value:
        return value["metrics"], value.get("protocol")
    return value, row.get(f"{benchmark}_protocol")


def face_tables(result: Mapping, out: Path) -> tuple[list[Path], dict]:
    paper = _load_yaml(EXPERIMENTS_ROOT / "chapter2" / "paper_tables_faces.yaml")
    rows_seen = sorted({row for seed in result.get("seeds", {}).values() for row in seed.get("rows", {})})
    paths, rows_by_table = [], {}
    for key, benchmark in (("table_2_3", "photoface"), ("table_2_4", "multipie")):
        spec = paper.get(key, {})
        columns = list(spec.get("columns", []))
        table = []
        for row in rows_seen:
            values = _seed_values(result, lambda s, r=row, b=benchmark: _face_metrics(s["rows"][r], b)[0])
            if values:
                table.append({"method": row, **aggregate(values, columns)})
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


def segmentation_tables(result: Mapping, out: Path) -> tuple[list[Path], dict]:
    paper = _load_yaml(EXPERIMENTS_ROOT / "chapter3" / "paper_tables.yaml")
    paths, rows_by_table = [], {}
    for key, dataset, methods in CHAPTER3_SPECS:
        spec = paper.get(key, {})
        columns = list(spec.get("columns", ["mIoU", "IoU_FG", "AP"]))
        metric_keys = {c: (f"{m}_best" if m != "ap" else "ap") for c, m in spec.get("metrics", {}).items()}
        table = []
        for method in methods:
            values = _seed_values(result, lambda s, d=dataset, m=method, keys=metric_keys, cols=columns: {
                column: s["results"][d]["metrics"][m][keys[column]] for column in cols})
            if values:
                name = "LD-ZNet with cross-attention" if key == "table_3_4" and method == "LD-ZNet" else method
                table.append({"method": name, **aggregate(values, columns)})
        rows_by_table[key] = {row["method"]: row for row in table}
        protocol = _seed_values(result, lambda s, d=dataset: s["results"][d]["protocol"])
        paths.append(write_results_table(out / key, spec.get("title", key) + " (miniature: shape world)", table,
                                         columns, [{k: v for k, v in r.items() if k != "threshold"}
                                                   for r in spec.get("rows", [])],
                                         protocol=protocol[0] if protocol else None, digits=1,
                                         notes=f"Ours: mean ± std over {len(result.get('seeds', {}))} seed(s); "
                                               "mIoU and IoU_FG are the best over the 0.02-spaced threshold sweep, "
                                               "so a prompt-blind model that marks everything as foreground "
                                               "scores the mean foreground fraction (large in the shape world: "
                                               "sky, grass, water, sand); AP does not reward that."))
    return paths, rows_by_table


# ------------------------------------------------------------------------------------------------ claims

def compare(better: Mapping | None, worse: Mapping | None, metric: str) -> dict:
    """Claim 'better beats worse' on `metric`: margin = improvement (positive = the claim holds)."""
    if not better or not worse or metric not in better or metric not in worse:
        return {"verdict": "not run", "detail": f"missing rows for {metric}"}
    b, w = better[metric], worse[metric]
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    margin = sign * (b["mean"] - w["mean"])
    noise = ((b.get("std") or 0.0) ** 2 + (w.get("std") or 0.0) ** 2) ** 0.5
    verdict = "reproduced" if margin > 0 else "not reproduced"
    return {"verdict": verdict, "margin": margin, "noise": noise, "metric": metric,
            "values": (b["mean"], w["mean"]), "n": min(b.get("n", 1), w.get("n", 1)),
            "within_noise": bool(noise > 0 and abs(margin) < noise)}


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
            "within_noise": False}


def compare_all(better: Mapping | None, worse: Mapping | None, headline: str, metrics: Sequence[str]) -> dict:
    """The claim on every metric of its table: "reproduced" when all agree, "mixed (k of n)" when some do.

    The margin shown is the headline metric's; `per_metric` holds every margin."""
    result = compare(better, worse, headline)
    if result["verdict"] == "not run":
        return result
    per_metric = {m: compare(better, worse, m) for m in metrics}
    per_metric = {m: c for m, c in per_metric.items() if c["verdict"] != "not run"}
    wins = sum(c["verdict"] == "reproduced" for c in per_metric.values())
    if wins == len(per_metric):
        verdict = "reproduced"
    elif wins == 0:
        verdict = "not reproduced"
    else:
        verdict = f"mixed ({wins} of {len(per_metric)} metrics)"
    return result | {"verdict": verdict, "per_metric": {m: c["margin"] for m, c in per_metric.items()}}


def claims(status: Mapping, depth: dict, faces: dict, seg: dict) -> list[dict]:
    out = []

    def add(text: str, stage: str, result: dict) -> None:
        if not _ok(status, stage):
            result = {"verdict": f"not run: stage {stage} {_why(status, stage)}"}
        out.append({"claim": text, "stage": stage, **result})

    t25, t26 = depth.get("table_2_5", {}), depth.get("table_2_6", {})
    t21 = depth.get("table_2_1_cap80", {})
    add("SharinGAN beats no SharinGAN (KITTI-layout, cap 50 m; Table 2.5)", "depth",
        compare_all(t25.get("SharinGAN (proposed)"), t25.get("No SharinGAN, no reconstruction"), "abs_rel",
                    DEPTH_COLUMNS))
    add("SharinGAN beats no SharinGAN (Make3D-style; Table 2.6)", "depth",
        compare_all(t26.get("SharinGAN (proposed)"), t26.get("No SharinGAN, no reconstruction"), "abs_rel",
                    MAKE3D_COLUMNS))
    add("SharinGAN beats the all-synthetic baseline (KITTI-layout, cap 80 m; Table 2.1)", "depth",
        compare_all(t21.get("SharinGAN (proposed)"), t21.get("All synthetic (baseline)"), "abs_rel", DEPTH_COLUMNS))
    add("Reconstruction loss helps (KITTI-layout, cap 50 m; Table 2.5)", "depth",
        compare_all(t25.get("SharinGAN (proposed)"), t25.get("SharinGAN, no reconstruction"), "abs_rel",
                    DEPTH_COLUMNS))
    add("Reconstruction loss helps (Make3D-style; Table 2.6)", "depth",
        compare_all(t26.get("SharinGAN (proposed)"), t26.get("SharinGAN, no reconstruction"), "abs_rel",
                    MAKE3D_COLUMNS))
    t23, t24 = faces.get("table_2_3", {}), faces.get("table_2_4", {})
    ours_face = next((k for k in t23 if k.startswith("SharinGAN")), None)
    base_face = next((k for k in t23 if not k.startswith("SharinGAN")), None)
    add("SharinGAN beats SfSNet on face normals (Photoface-layout; Table 2.3)", "faces",
        compare_all(t23.get(ours_face), t23.get(base_face), "mae_deg", ["mae_deg", "lt20", "lt25", "lt30"]))
    add("SharinGAN beats SfSNet on lighting (Multi-PIE-layout; Table 2.4)", "faces",
        compare_all(t24.get(ours_face), t24.get(base_face), "top1", ["top1", "top2", "top3"]))
    for key, label, metrics in (("table_3_1", "PhraseCut-layout; Table 3.1", ["mIoU", "IoU_FG", "AP"]),
                                ("table_3_2", "AIGI-layout; Table 3.2", ["mIoU", "AP"]),
                                ("table_3_3_refcoco", "RefCOCO-layout; Table 3.3", ["mIoU", "AP"]),
                                ("table_3_3_refcoco_plus", "RefCOCO+-layout; Table 3.3", ["mIoU", "AP"]),
                                ("table_3_3_refcocog", "G-Ref-layout; Table 3.3", ["mIoU", "AP"])):
        table = seg.get(key, {})
        add(f"ZNet beats RGBNet ({label})", "ldznet", compare_all(table.get("ZNet"), table.get("RGBNet"), "mIoU",
                                                                  metrics))
        add(f"LD-ZNet beats ZNet ({label})", "ldznet", compare_all(table.get("LD-ZNet"), table.get("ZNet"), "mIoU",
                                                                   metrics))
    t34 = seg.get("table_3_4", {})
    add("Cross-attention beats concatenation (PhraseCut-layout; Table 3.4)", "ldznet",
        compare_all(t34.get("LD-ZNet with cross-attention"), t34.get("LD-ZNet with concatenation"), "mIoU",
                    ["mIoU", "IoU_FG", "AP"]))
    probe = status.get("probe", {}).get("result", {})
    add("Blocks 6-10 at t = 300-500 score best (Fig 3.4: best cell inside; margin = mean AP inside - outside)",
        "probe", probe_claim(probe))
    return out


def claim_line(claim: Mapping) -> str:
    verdict = claim["verdict"]
    if "margin" not in claim:
        return f"| {claim['claim']} | {verdict} | – |"
    better, worse = claim["values"]
    extra = f" (best cell: block {claim['best_cell'][0]}, t = {claim['best_cell'][1]}, AP {claim['best_ap']:.1f})" \
        if "best_cell" in claim else ""
    noise = f" ± {claim['noise']:.3g}" if claim.get("noise") else ""
    flag = " — within seed noise" if claim.get("within_noise") else ""
    others = ""
    if claim.get("per_metric"):
        others = "; " + ", ".join(f"{m} {v:+.3g}" for m, v in claim["per_metric"].items() if m != claim["metric"])
    return (f"| {claim['claim']} | **{verdict}**{flag} | {claim['metric']} {claim['margin']:+.3g}{noise} "
            f"({better:.3g} vs {worse:.3g}, n = {claim.get('n', 1)}){extra}{others} |")


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


def write_report(cfg, status: Mapping, seconds: float = 0.0, figures: bool = True) -> Path:
    root = Path(str(cfg.out))
    tables_dir = root / "tables"
    lines = ["# The dissertation in miniature", "",
             f"Generated {_dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds')} by `python -m demo` "
             f"(config: seeds = {int(cfg.seeds)}, threads = {int(cfg.threads)}); this run took {seconds:.0f} s "
             "(cached stages reused). Procedural worlds, tiny networks, minutes of CPU: these numbers test the "
             "code path and the *direction* of the dissertation's claims, not its values; the paper's numbers "
             "need the real datasets and weights (docs/demo.md).", "",
             "## Stages", "",
             "Wall time depends on the machine's load; CPU time (all threads and worker processes) does not.", "",
             "| stage | status | wall (s) | CPU (s) | what |", "|---|---|---|---|---|"]
    totals = [0.0, 0.0]
    for name, entry in status.items():
        seconds_run = entry.get("seconds") if entry.get("seconds") is not None else entry.get("ran_seconds")
        cpu = entry.get("cpu_seconds")
        totals[0] += seconds_run or 0.0
        totals[1] += cpu or 0.0
        state = entry["status"] + (f": {entry['reason']}" if entry.get("reason") else "")
        if entry["status"] == "cached":
            state += " (reused; times of the run that made it)"
        lines.append(f"| {name} | {state} | {_num(seconds_run)} | {_num(cpu)} | {entry.get('description', '')} |")
    lines.append(f"| all stages | | {totals[0]:.0f} | {totals[1]:.0f} | |")
    depth_rows, face_rows, seg_rows = {}, {}, {}
    sections = []
    if _ok(status, "depth"):
        paths, depth_rows = depth_tables(status["depth"]["result"], tables_dir)
        sections += ["## Chapter 2: monocular depth (§2.3.1)", "", _table_text(paths)]
    else:
        sections += ["## Chapter 2: monocular depth (§2.3.1)", "", f"Not run: {_why(status, 'depth')}.", ""]
    if _ok(status, "faces"):
        paths, face_rows = face_tables(status["faces"]["result"], tables_dir)
        sections += ["## Chapter 2: face normals and lighting (§2.3.2)", "", _table_text(paths)]
    else:
        sections += ["## Chapter 2: face normals and lighting (§2.3.2)", "", f"Not run: {_why(status, 'faces')}.", ""]
    if _ok(status, "ldznet"):
        paths, seg_rows = segmentation_tables(status["ldznet"]["result"], tables_dir)
        sections += ["## Chapter 3: text-based segmentation (§3.4)", "", _table_text(paths)]
    else:
        sections += ["## Chapter 3: text-based segmentation (§3.4)", "", f"Not run: {_why(status, 'ldznet')}.", ""]
    if _ok(status, "tiny_ldm"):
        t = status["tiny_ldm"]["result"]
        sections += ["### The tiny LDM (stand-in for Stable Diffusion v1.4)", "", tiny_ldm_summary(t), ""]
    claim_list = claims(status, depth_rows, face_rows, seg_rows)
    lines += ["", "## The dissertation's claims on the miniature", "",
              "Each claim is checked on every metric of its table: *reproduced* when all agree, *mixed (k of n)* "
              "when some do. Margin = improvement of the claimed-better method (positive = the claim holds), "
              "mean over seeds, ± the seeds' combined std when more than one seed ran; the headline metric "
              "first (with both values), then the others.", "",
              "| claim | verdict | margin |", "|---|---|---|"] + [claim_line(c) for c in claim_list] + [""]
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
    path = root / "REPORT.md"
    write_text(path, "\n".join(lines) + "\n")
    return path
