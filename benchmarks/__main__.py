"""`python -m benchmarks [--quick] [--only NAME ...] [--out benchmarks/results] [--device auto|cpu|cuda]`.

Runs the benchmarks one after the other in this process and writes one JSON + one Markdown file. A
benchmark that fails is recorded as failed (with the error) and the others still run; the exit status is 1
when any failed.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import traceback
import warnings
from collections.abc import Sequence

from benchmarks import BENCHMARKS, load_benchmark
from benchmarks.report import environment, write_results
from benchmarks.timing import default_context


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny configs, seconds (what the tests run)")
    parser.add_argument("--only", action="append", choices=list(BENCHMARKS), metavar="NAME",
                        help=f"run only these benchmarks (repeatable): {', '.join(BENCHMARKS)}")
    parser.add_argument("--out", default="benchmarks/results", help="folder of the results files")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="auto = CUDA when present, else the CPU set")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module="pytorch_lightning")
    context = default_context(args.quick, args.device)
    names = args.only or list(BENCHMARKS)
    print(f"benchmarks: {', '.join(names)} on {context.device} (mode {context.mode})", flush=True)
    started = time.perf_counter()
    sections, failed = [], []
    for name in names:
        begin = time.perf_counter()
        print(f"[{name}] running ...", flush=True)
        try:
            section = load_benchmark(name)(context)
            section.setdefault("status", "ok")
        except Exception as error:  # noqa: BLE001 - one broken benchmark must not hide the others
            traceback.print_exc()
            failed.append(name)
            section = {"name": name, "title": name, "status": f"failed: {type(error).__name__}: {error}",
                       "tables": [], "notes": []}
        section["wall_time_s"] = round(time.perf_counter() - begin, 1)
        print(f"[{name}] {section['status']} in {section['wall_time_s']:.0f} s", flush=True)
        sections.append(section)
    command = "python -m benchmarks " + " ".join(sys.argv[1:] if argv is None else argv)
    results = {"environment": environment(context), "command": command.strip(),
               "wall_time_s": time.perf_counter() - started, "sections": sections}
    json_path, md_path = write_results(args.out, context, results)
    print(f"wrote {json_path} and {md_path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
