"""Results tables in the dissertation's form: our rows beside the paper's, as Markdown and JSON.

    write_results_table("runs/chapter2/tables/table_2_1", "Table 2.1: KITTI Eigen, cap 80 m",
                        rows=[{"method": "SharinGAN", "abs_rel": 0.118, ...}],
                        columns=["abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3"],
                        paper_rows=[{"method": "SharinGAN", "abs_rel": 0.116, ...}],
                        protocol={"split": "eigen", "crop": "garg", "cap": 80, "image_count": 697})

Both files are written atomically; a crash never leaves a half-written table. A missing value prints "–".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from common.checkpoints import write_json, write_text

ARROWS = {
    "abs_rel": "↓", "sq_rel": "↓", "rmse": "↓", "rmse_log": "↓", "rmse_log10": "↓", "a1": "↑", "a2": "↑",
    "a3": "↑", "mae_deg": "↓", "lt20": "↑", "lt25": "↑", "lt30": "↑", "miou_best": "↑", "fgiou_best": "↑",
    "ap": "↑", "miou_0.3": "↑", "fgiou_0.3": "↑", "top1": "↑", "top2": "↑", "top3": "↑",
}


def format_value(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and "mean" in value:  # {"mean": m, "std": s, "n": n}
        std = value.get("std")
        text = format_value(value["mean"], digits)
        return text if std is None else f"{text} ± {format_value(std, digits)}"
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, (int, float)):
        return f"{value:.{digits}f}" if isinstance(value, float) else str(value)
    return str(value)


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], paper_rows: Sequence[Mapping] = (),
                   digits: int = 3) -> str:
    header = ["method", "source", *[f"{column} {ARROWS.get(column, '')}".strip() for column in columns]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for source, group in (("paper", paper_rows), ("ours", rows)):
        for row in group:
            cells = [str(row.get("method", "?")), str(row.get("source", source))]
            cells += [format_value(row.get(column), digits) for column in columns]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_results_table(path_stem: str | Path, title: str, rows: Sequence[Mapping[str, Any]],
                        columns: Sequence[str], paper_rows: Sequence[Mapping[str, Any]] = (),
                        protocol: Mapping[str, Any] | None = None, notes: str = "", digits: int = 3) -> Path:
    """Write `<stem>.md` and `<stem>.json`; returns the Markdown path."""
    stem = Path(path_stem)
    text = f"## {title}\n\n" + markdown_table(rows, columns, paper_rows, digits)
    if protocol:
        text += "\nProtocol: " + ", ".join(f"{key} = {value}" for key, value in protocol.items()) + "\n"
    if notes:
        text += "\n" + notes.strip() + "\n"
    write_json(stem.with_suffix(".json"), {
        "title": title, "columns": list(columns), "protocol": dict(protocol or {}),
        "paper": [dict(row) for row in paper_rows], "ours": [dict(row) for row in rows], "notes": notes,
    })
    markdown = stem.with_suffix(".md")
    write_text(markdown, text)
    return markdown


def mean_and_std(values: Sequence[float]) -> dict[str, float]:
    """{"mean", "std", "n"} over seeds (sample standard deviation; 0 for a single seed)."""
    values = [float(value) for value in values]
    if not values:
        raise ValueError("no values to average")
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return {"mean": mean, "std": std, "n": len(values)}
