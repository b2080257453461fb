"""Module-level stage and part functions for the demo runner's tests with jobs > 1 (worker processes import
them by name; closures cannot be sent to another process)."""

from __future__ import annotations

import os
import time
from pathlib import Path


def record_call(ctx, name: str) -> None:
    """Append one line per call to ``<out>/calls.txt`` (the runner's workers share only the files)."""
    with open(ctx.root / "calls.txt", "a") as file:
        file.write(name + "\n")


def part_square(ctx, part: str, folder: Path) -> dict:
    """A part: prints (into its log), writes a file, fails while ``<out>/fail_<part>`` exists."""
    record_call(ctx, part)
    print(f"part {part} in process {os.getpid()}")
    if (ctx.root / f"fail_{part}").exists():
        raise RuntimeError(f"part {part} broke")
    (folder / "artifact.txt").write_text(part)
    value = int(part.removeprefix("p"))
    return {"square": value * value, "pid": os.getpid()}


def combine_squares(ctx) -> dict:
    return {"squares": {part: result["square"] for part, result in ctx.parts.items()},
            "pids": sorted({result["pid"] for result in ctx.parts.values()})}


def wait_for_each_other(ctx) -> dict:
    """Writes ``<out>/<own name>.here`` and waits (up to 60 s) for the other stage's file: finishes only if
    both stages run at the same time (run one after the other, the first times out)."""
    record_call(ctx, ctx.name)
    (ctx.root / f"{ctx.name}.here").write_text("")
    other = ctx.root / f"{ctx.config['other']}.here"
    deadline = time.monotonic() + 60
    while not other.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{ctx.name}: {other.name} never appeared (the stages did not run concurrently)")
        time.sleep(0.05)
    return {"pid": os.getpid()}
