"""Learning curves of every row and the plateau criterion (`python -m demo --study`, docs/demo.md).

Curves are read from the TensorBoard logs the chapters' training writes (`<run>/tb`): the validation metric
of the claims' headline (depth `val/abs_rel` on the KITTI-layout val drives, faces `val/mae_deg` on
Photoface val, segmentation `val/miou_best` on PhraseCut val); a row without validation (the all-synthetic
depth baseline is the synthetic pretraining) is shown with its training loss instead, and says so.

Plateau criterion: `common.plateau.plateau` (its docstring), the one that `schedule.stop_at_plateau` also
applies while a run trains. A row that has not plateaued is flagged in the report; its claims are marked "not
plateaued".
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from common.plateau import moving_mean, noise_level, plateau  # noqa: F401 - re-exported for the report and tests
from demo.verdicts import lower_is_better

HEADLINE_TAGS = {"depth": "val/abs_rel", "faces": "val/mae_deg", "ldznet": "val/miou_best"}
FALLBACK_TAGS = ("train/pretrain/task_total", "train/task/total", "train/loss_epoch")


def read_scalars(tb_dir: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{tag: (steps, values)} of a TensorBoard log folder ({} when there is none)."""
    tb_dir = Path(tb_dir)
    if not tb_dir.is_dir():
        return {}
    accumulator = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    out = {}
    for tag in accumulator.Tags().get("scalars", []):
        events = accumulator.Scalars(tag)
        out[tag] = (np.array([e.step for e in events], dtype=np.float64), np.array([e.value for e in events]))
    return out


def _curve(run_dir: Path, headline: str) -> dict | None:
    scalars = read_scalars(run_dir / "tb")
    for tag in (headline, *FALLBACK_TAGS):
        if tag in scalars and len(scalars[tag][0]):
            steps, values = scalars[tag]
            order = np.argsort(steps, kind="stable")
            return {"tag": tag, "steps": steps[order].tolist(), "values": values[order].tolist(),
                    "validation": tag.startswith("val/")}
    return None


def run_dirs(status: Mapping) -> dict[str, dict[str, dict[str, Path]]]:
    """{chapter: {row: {seed: run folder}}} of every trained row the stages recorded."""
    out: dict[str, dict[str, dict[str, Path]]] = {}
    for chapter in ("depth", "faces"):
        result = status.get(chapter, {}).get("result", {})
        for seed, entry in result.get("seeds", {}).items():
            for row, checkpoint in entry.get("checkpoints", {}).items():
                if checkpoint:  # <run>/checkpoints/networks_*.pt
                    out.setdefault(chapter, {}).setdefault(row, {})[seed] = Path(checkpoint).parent.parent
    from demo.floors import IMAGE_ONLY  # deferred: demo.floors brings torch and scipy, ~1.6 s (measured), for a name

    methods = {"rgbnet": "RGBNet", "znet": "ZNet", "ldznet": "LD-ZNet", "ldznet_concat": "LD-ZNet with concatenation"}
    for seed, entry in status.get("ldznet", {}).get("result", {}).get("seeds", {}).items():
        for variant, run in entry.get("runs", {}).items():
            if run.get("run_dir"):
                out.setdefault("ldznet", {}).setdefault(methods.get(variant, variant), {})[seed] = Path(run["run_dir"])
    for seed, run in status.get("floors_segmentation", {}).get("result", {}).get("image_only", {}).items():
        out.setdefault("ldznet", {}).setdefault(IMAGE_ONLY, {})[seed] = Path(run["run_dir"])
    return out


def learning_curves(status: Mapping, tail: float = 1 / 3, tolerance: float = 0.1,
                    noise_allowance: float = 2.0) -> dict:
    """{chapter: {row: {"tag", "validation", "seeds": {seed: curve + plateau}, "plateaued"}}}; a row has
    plateaued when every seed's curve has (None when any curve has too few points to tell)."""
    out: dict = {}
    for chapter, rows in run_dirs(status).items():
        for row, seeds in rows.items():
            entry = {"seeds": {}}
            for seed, folder in seeds.items():
                curve = _curve(folder, HEADLINE_TAGS[chapter])
                if curve is None:
                    continue
                metric = curve["tag"].split("/")[-1]
                lower = lower_is_better(metric) or not curve["validation"]  # losses: lower is better
                curve["plateau"] = plateau(curve["steps"], curve["values"], lower, tail, tolerance,
                                           noise_allowance=noise_allowance)
                entry["seeds"][seed] = curve
                entry["tag"], entry["validation"] = curve["tag"], curve["validation"]
            if entry["seeds"]:
                states = [c["plateau"]["plateaued"] for c in entry["seeds"].values()]
                entry["plateaued"] = None if any(s is None for s in states) else all(states)
                out.setdefault(chapter, {})[row] = entry
    return out


def learning_curves_figure(curves: Mapping, path: Path) -> Path | None:
    """One panel per chapter, one line per row and seed (the report's learning-curve figure)."""
    if not curves:
        return None
    # deferred: pyplot ~0.4 s to import (measured), and the Agg backend is chosen only when a figure is drawn
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chapters = list(curves)
    figure, axes = plt.subplots(1, len(chapters), figsize=(5.5 * len(chapters), 3.8), squeeze=False)
    for axis, chapter in zip(axes[0], chapters):
        tags = set()
        for k, (row, entry) in enumerate(curves[chapter].items()):
            for j, (_seed, curve) in enumerate(sorted(entry["seeds"].items())):
                axis.plot(curve["steps"], curve["values"], color=f"C{k}", alpha=0.85, marker=".",
                          label=f"{row} ({curve['tag']})" if j == 0 else None)
                tags.add(curve["tag"])
        axis.set_title(chapter)
        axis.set_xlabel("training step")
        axis.set_ylabel(", ".join(sorted(tags)))
        axis.legend(fontsize=6)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
