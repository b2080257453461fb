"""`python -m demo [--quick] [--study] [--force] [--seeds N] [--out DIR] [--only STAGE ...] [key=value ...]`.

Runs the miniature dissertation (docs/demo.md): the procedural worlds, the tiny LDM, both chapters' pipelines,
the sanity floors and the Fig 3.4 probe, then writes `<out>/REPORT.md`. Finished stages (and, inside a stage,
finished seeds) are reused unless `--force`; `--only` re-runs the named stages (their cached inputs are
reused). `--study` runs experiments/demo/study_until_plateau_90min.yaml (3 seeds, every validated run trained
until its validation metric plateaus, learning curves, ~90 min on 2 cores, into
runs/demo-study-until-plateau-90min; `--publish` then copies its report to docs/demo-study.md + .json).
`key=value` overrides the demo config (experiments/demo/demo.yaml, quick.yaml with --quick,
study_until_plateau_90min.yaml with --study, study_quick.yaml with both), e.g.
`worlds.shapes.phrasecut.train=1000` or `overrides.depth=[schedule.train_iterations=600]`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch  # loaded anyway by common.config (through common.checkpoints): no start-up cost

from common.config import load_config
from demo.plan import DEMO_EXPERIMENTS, build_stages, device_of
from demo.report import publish_study, write_report  # ~0.01 s of `--list` (measured)
from demo.stages import StageRunner
from demo.verdicts import verdict_comparison, verdict_flips

STUDY_CONFIG = "study_until_plateau_90min.yaml"  # `--study`: the main study (docs/demo-study.md)


def parse(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__.splitlines()[0],
                                     epilog="Further arguments key=value override keys of the demo config.")
    parser.add_argument("--quick", action="store_true", help="smoke-test size (experiments/demo/quick.yaml)")
    parser.add_argument("--study", action="store_true",
                        help="3 seeds, each run trained until it plateaus "
                             "(experiments/demo/study_until_plateau_90min.yaml)")
    parser.add_argument("--publish", action="store_true",
                        help="with --study: copy the report to docs/<publish_name>.md, .json "
                             "(--study alone: docs/demo-study.md)")
    parser.add_argument("--compare-verdicts", nargs=2, metavar=("A.json", "B.json"),
                        help="list claims reproduced in one verdicts.json and contradicted in the other; exit 1 if any")
    parser.add_argument("--force", action="store_true", help="re-run finished stages")
    parser.add_argument("--seeds", type=int, default=None, help="training seeds per chapter stage")
    parser.add_argument("--out", default=None, help="output folder (default runs/demo, runs/demo-quick)")
    parser.add_argument("--jobs", type=int, default=None,
                        help="worker processes running independent stages and seeds at once (config key jobs)")
    parser.add_argument("--only", nargs="+", default=(), metavar="STAGE", help="run only these stages")
    parser.add_argument("--config", default=None, help="demo config (default experiments/demo/demo.yaml)")
    parser.add_argument("--list", action="store_true", help="list the stages and exit")
    args, overrides = parser.parse_known_args(argv)
    unknown = [item for item in overrides if item.startswith("-")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)} (config overrides are key=value)")
    return args, overrides


def publish_options(cfg) -> dict:
    """Where `--publish` puts a study's report: docs/<publish_name>.md, docs/demo-study.md (the main study's
    page, with the notes) when the config names none; a page other than the main one (e.g. study_plateau.yaml:
    docs/demo-study-plateau.md) gets `publish_reading` saying what it is."""
    name = cfg.get("publish_name")
    if not name:
        return {}
    return {"name": str(name)} | ({"reading": str(cfg.publish_reading)} if cfg.get("publish_reading") else {})


def main(argv: Sequence[str] | None = None) -> int:
    args, overrides = parse(sys.argv[1:] if argv is None else argv)
    if args.compare_verdicts:
        first, second = (json.loads(open(path).read()) for path in args.compare_verdicts)
        print(verdict_comparison(first, second))
        flips = verdict_flips(first["claims"], second["claims"])
        print(f"{len(flips)} claim(s) flip between reproduced and contradicted" + "".join(f"\n  {c}" for c in flips))
        return 1 if flips else 0
    if args.publish and not args.study:
        raise SystemExit("--publish goes with --study (it publishes the study's report)")
    names = {(False, False): "demo.yaml", (True, False): "quick.yaml", (False, True): STUDY_CONFIG,
             (True, True): "study_quick.yaml"}
    config = args.config or DEMO_EXPERIMENTS / names[(args.quick, args.study)]
    if args.seeds is not None:
        overrides.append(f"seeds={args.seeds}")
    if args.out is not None:
        overrides.append(f"out={args.out}")
    if args.jobs is not None:
        overrides.append(f"jobs={args.jobs}")
    cfg = load_config(config, overrides)
    cfg.out = str(Path(str(cfg.out)).resolve())  # results name files by absolute path: readable from anywhere
    stages = build_stages(cfg)
    if args.list:
        for stage in stages:
            print(f"{stage.name:19s} needs {', '.join(stage.needs) or '-':42s} {stage.description}")
        return 0
    unknown = set(args.only) - {stage.name for stage in stages}
    if unknown:
        raise SystemExit(f"--only: unknown stage(s) {sorted(unknown)}; stages: {[s.name for s in stages]}")
    if device_of(cfg) == "cuda" and not torch.cuda.is_available():
        raise SystemExit("device=cuda: no CUDA device is visible to torch (torch.cuda.is_available() is False); "
                         "run with device=cpu (the default) or on a machine with a CUDA GPU")
    threads = 0 if "OMP_NUM_THREADS" in os.environ else int(cfg.threads)  # 0: the environment decides
    if threads:
        torch.set_num_threads(threads)
    start = time.perf_counter()
    status = StageRunner(cfg.out, force=args.force, only=args.only, jobs=int(cfg.jobs), threads=threads).run(stages)
    command = "python -m demo " + " ".join(sys.argv[1:] if argv is None else argv)
    report = write_report(cfg, status, seconds=time.perf_counter() - start, command=command.strip())
    print(f"\nreport: {report}")
    if args.publish:
        if any(entry["status"] not in ("done", "cached") for entry in status.values()):
            print("not published: some stages did not finish (see the report)")
        else:
            print("published:", *publish_study(cfg.out, **publish_options(cfg)), sep="\n  ")
    for name, entry in status.items():
        print(f"  {name:14s} {entry['status']}" + (f": {entry['reason']}" if entry.get("reason") else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
