"""Results files: one JSON with everything and one Markdown page with a table per measurement.

Both are written atomically (`common.checkpoints`) under `benchmarks/results/` as
`<mode>-<device>-<UTC date and time>.{json,md}`; the header records device, versions, date and git state
(`common.runs.environment_record`), so numbers from different machines are never mixed up.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks.timing import Context
from common.checkpoints import write_json, write_text


def environment(context: Context) -> dict[str, Any]:
    # deferred: common.runs brings omegaconf, 0.05-0.09 s of `python -m benchmarks --help`'s ~1.4 s (measured)
    from common.runs import environment_record

    record = environment_record()
    device = context.device
    record["benchmark_device"] = (torch.cuda.get_device_name(device) if device.type == "cuda"
                                  else f"cpu ({torch.get_num_threads()} threads)")
    record["benchmark_mode"] = context.mode
    record["torch"] = torch.__version__
    record["cudnn_tf32"] = torch.backends.cudnn.allow_tf32 if device.type == "cuda" else None
    record["matmul_tf32"] = torch.backends.cuda.matmul.allow_tf32 if device.type == "cuda" else None
    return record


def device_slug(context: Context) -> str:
    name = torch.cuda.get_device_name(context.device) if context.device.type == "cuda" else "cpu"
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()


def results_stem(out_dir: str | Path, context: Context, now: _dt.datetime | None = None) -> Path:
    now = now or _dt.datetime.now(_dt.timezone.utc)
    return Path(out_dir) / f"{context.mode}-{device_slug(context)}-{now.strftime('%Y-%m-%dT%H%M%SZ')}"


def format_cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:.0f}"
        if abs(value) >= 1:
            return f"{value:.2f}"
        return f"{value:.3f}"
    return str(value).replace("|", "/").replace("\n", " ")


def markdown_table(columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return "_(no rows)_\n"
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(format_cell(row.get(column)) for column in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def render_markdown(results: Mapping[str, Any]) -> str:
    env = results["environment"]
    packages = env.get("packages", {})
    versions = ", ".join(f"{name} {version}" for name, version in packages.items() if version)
    text = [
        "# Benchmarks: speed and memory of every method",
        "",
        f"- device: **{env['benchmark_device']}** (mode `{env['benchmark_mode']}`)",
        f"- date: {env['date']}, wall time {results['wall_time_s']:.0f} s",
        f"- python {env['python']}, {versions}",
        f"- git: {env.get('git', {}).get('sha')} (dirty: {env.get('git', {}).get('dirty')})",
        f"- command: `{results['command']}`",
        "",
        "Times are medians over the timed repeats; variants of one table were measured in the same process "
        "run, and ratios are formed from those same numbers. No number here is a test.",
        "",
    ]
    for section in results["sections"]:
        text += [f"## {section['title']}", ""]
        if section.get("status", "ok") != "ok":
            text += [f"**{section['status']}**", ""]
        for reduction in section.get("reductions", []):
            text.append(f"- reduced set: {reduction}")
        if section.get("reductions"):
            text.append("")
        for table in section.get("tables", []):
            text += [f"### {table['title']}", "", markdown_table(table["columns"], table["rows"])]
        for note in section.get("notes", []):
            text.append(f"- note: {note}")
        text.append("")
    return "\n".join(text).rstrip() + "\n"


def write_results(out_dir: str | Path, context: Context, results: Mapping[str, Any]) -> tuple[Path, Path]:
    """Write `<stem>.json` and `<stem>.md`; returns both paths."""
    stem = results_stem(out_dir, context)
    json_path, md_path = stem.with_suffix(".json"), stem.with_suffix(".md")
    write_json(json_path, results)
    write_text(md_path, render_markdown(results))
    return json_path, md_path
