"""Chapter 2 end to end: `python -m sharingan.pipeline --task depth [--config C] [--root R] [key=value ...]`.

Stages (`pipeline.stages` of the config, default = all, in this order):
    verify              every data root, list and first sample the later stages need (fails fast, naming it)
    pretrain_generator  stage 1, G as an autoencoder on both domains (skipped when init.generator is set)
    pretrain_task       stage 2, T supervised on synthetic data (skipped when init.task_network is set)
    train               end to end, once per row experiment in `pipeline.rows` with schedule.train_iterations > 0
    evaluate            each row's best (else last) networks checkpoint through the task's benchmarks
    tables              the dissertation's tables with every row beside the paper's numbers
Each row file (e.g. experiments/chapter2/depth_sharingan.yaml) is applied as a delta on top of the pipeline
config (its own `defaults` are not re-read), then the command-line overrides again, so `depth_tiny.yaml` and
data-root overrides reach every row. `pipeline.seeds` (default [seed]) trains every trained row once per
seed; with several seeds the tables show mean ± std (the pretraining stages run once).
`init.official=FILE` (the authors' released weights, `sharingan.official`) replaces every training stage: the
file is imported, evaluated and written into the tables beside the paper's numbers.
`resume=last` continues an interrupted pipeline: every training stage reuses its newest finished run, resumes
its newest `last.ckpt` exactly, or starts afresh (`sharingan.train.run_or_resume`).
Outputs: `<root>/chapter2/<experiment>/...` run folders and
`<root>/chapter2/<pipeline experiment>/<timestamp>/{summary.json, tables/}`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from common.checkpoints import write_json
from common.config import REPO_ROOT, apply_overrides, load_config
from common.results import mean_and_std
from common.runs import run_dir_for
from sharingan.eval import evaluate_checkpoint
from sharingan.official import describe, import_official
from sharingan.tasks import load_task
from sharingan.train import run_or_resume

ALL_STAGES = ("verify", "pretrain_generator", "pretrain_task", "train", "evaluate", "tables")


def row_config(base: DictConfig, row_file: Path, overrides: Sequence[str]) -> DictConfig:
    """The pipeline config with a row experiment's own keys on top, then the overrides.

    A row whose file sets `schedule.train_iterations: 0` *is* an untrained row (the all-synthetic baseline
    of Table 2.1 = T after stage 2): an override that lengthens the end-to-end stage of every row (e.g.
    `schedule.train_iterations=300`) must not turn it into a trained one, which would make it a copy of the
    "no SharinGAN" row."""
    if not row_file.is_file():
        raise FileNotFoundError(f"pipeline row experiment not found: {row_file}")
    delta = OmegaConf.load(row_file)
    delta.pop("defaults", None)
    cfg = OmegaConf.merge(base, delta)
    cfg.pop("pipeline", None)
    cfg = apply_overrides(cfg, [o for o in overrides if not o.lstrip("+").startswith("pipeline.")])
    if OmegaConf.select(delta, "schedule.train_iterations") == 0:
        cfg.schedule.train_iterations = 0
    return cfg


def combine_seeds(per_seed: Sequence[dict], seeds: Sequence[int]) -> dict:
    """Per benchmark, every metric as {"mean", "std", "n"} over the seeds (GAN-based DA varies run to run)."""
    combined = {}
    for benchmark, first in per_seed[0].items():
        metrics = {key: (mean_and_std([run[benchmark]["metrics"][key] for run in per_seed])
                         if key != "image_count" else value) for key, value in first["metrics"].items()}
        combined[benchmark] = {"metrics": metrics, "protocol": {**first["protocol"], "seeds": list(seeds)}}
    return combined


def run_pipeline(task_name: str, config: str | Path | None = None, overrides: Sequence[str] = (),
                 root: str | Path | None = None) -> dict:
    task = load_task(task_name)
    config_path = Path(config) if config else REPO_ROOT / task.PIPELINE_CONFIG
    cfg = load_config(config_path, list(overrides))
    if str(cfg.task) != task_name:
        raise ValueError(f"config {config_path} is for task {cfg.task!r}, not {task_name!r}")
    pipeline = cfg.get("pipeline") or {}
    stages = [str(s) for s in pipeline.get("stages", ALL_STAGES)]
    unknown = [s for s in stages if s not in ALL_STAGES]
    if unknown:
        raise ValueError(f"pipeline.stages has unknown stages {unknown} (known: {ALL_STAGES})")
    root = Path(root if root is not None else pipeline.get("root", "runs"))
    out_dir = run_dir_for("chapter2", str(cfg.experiment), root)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary: dict = {"task": task_name, "config": str(config_path), "overrides": list(overrides), "stages": stages,
                     "rows": {}}

    if OmegaConf.select(cfg, "init.official", default=None):
        return run_official(task, cfg, stages, out_dir, summary)

    if "verify" in stages:
        summary["data"] = task.verify_data(cfg, stages)
        print(f"[verify] data found: {summary['data']}")

    generator_checkpoint = cfg.init.get("generator")
    task_checkpoint = cfg.init.get("task_network")
    if "pretrain_generator" in stages and not generator_checkpoint:
        generator_checkpoint = str(run_or_resume(cfg, "pretrain_generator", root)["checkpoint"])
    if "pretrain_task" in stages and not task_checkpoint:
        task_checkpoint = str(run_or_resume(cfg, "pretrain_task", root)["checkpoint"])
    summary["pretrained"] = {"generator": generator_checkpoint, "task_network": task_checkpoint}

    seeds = [int(seed) for seed in pipeline.get("seeds", [cfg.seed])]
    summary["seeds"] = seeds
    results: dict[str, dict] = {}
    for row in pipeline.get("rows", [None]):  # no rows listed: the pipeline config is the only row
        row_file = config_path.parent / str(row) if row is not None else config_path
        row_cfg = row_config(cfg, row_file, overrides) if row is not None else cfg.copy()
        if row_cfg.init.get("from_pipeline", True):
            row_cfg.init.generator = generator_checkpoint
            row_cfg.init.task_network = task_checkpoint
        name = str(OmegaConf.select(row_cfg, "eval.row_name", default=None) or row_cfg.experiment)
        trains = int(row_cfg.schedule.train_iterations) > 0
        if trains and "train" not in stages:
            continue
        if not trains and row_cfg.sharingan.use_sharingan:
            raise ValueError(f"row {row_file}: schedule.train_iterations = 0 only makes sense without SharinGAN")
        entry: dict = {"experiment": str(row_cfg.experiment), "runs": []}
        per_seed = []
        for seed in seeds if trains else [None]:  # an untrained row (stage-2 baseline) has one checkpoint
            seed_cfg = row_cfg.copy()
            run: dict = {"seed": seed}
            if seed is not None:
                seed_cfg.seed = seed
                if len(seeds) > 1:
                    seed_cfg.experiment = f"{row_cfg.experiment}_seed{seed}"
            checkpoint = task_checkpoint
            if trains:
                trained = run_or_resume(seed_cfg, "train", root)
                checkpoint, run["run_dir"] = str(trained["checkpoint"]), str(trained["run_dir"])
            run["checkpoint"] = checkpoint
            if "evaluate" in stages:
                if not checkpoint:
                    raise ValueError(f"row {name}: no checkpoint to evaluate (run pretrain_task or set "
                                     "init.task_network)")
                eval_dir = out_dir / "eval" / str(seed_cfg.experiment)
                per_seed.append(evaluate_checkpoint(checkpoint, eval_dir, seed_cfg, task=task_name))
                run["metrics"] = str(eval_dir / "metrics.json")
            entry["runs"].append(run)
        if len(entry["runs"]) == 1:
            entry.update({key: value for key, value in entry["runs"][0].items() if key != "seed"})
        if per_seed:
            results[name] = per_seed[0] if len(per_seed) == 1 else combine_seeds(per_seed, seeds)
            if len(per_seed) > 1:
                combined = out_dir / "eval" / str(row_cfg.experiment) / "metrics_over_seeds.json"
                combined.parent.mkdir(parents=True, exist_ok=True)
                write_json(combined, results[name])
                entry["metrics"] = str(combined)
        summary["rows"][name] = entry
        write_json(out_dir / "summary.json", summary)

    return finish(task, cfg, stages, results, out_dir, summary)


def finish(task, cfg: DictConfig, stages: Sequence[str], results: dict, out_dir: Path, summary: dict) -> dict:
    """The tables beside the paper's numbers (stage `tables`) and the final `summary.json`."""
    if "tables" in stages and results:
        tables = task.write_tables(cfg, results, out_dir / "tables")
        summary["tables"] = [str(p) for p in tables]
        print("[tables] " + ", ".join(str(p) for p in tables))
    write_json(out_dir / "summary.json", summary)
    print(f"pipeline summary: {out_dir / 'summary.json'}")
    return {"out_dir": out_dir, **summary}


def run_official(task, cfg: DictConfig, stages: Sequence[str], out_dir: Path, summary: dict) -> dict:
    """`init.official=FILE`: the authors' released weights instead of training (`sharingan.official`).

    No pretraining or training; the file is imported into `<out_dir>/official/networks.pt`, evaluated on the
    task's benchmarks and written into the tables beside the paper's numbers (row "... authors' weights").
    """
    official = str(cfg.init.official)
    summary["official"] = official
    summary["skipped_stages"] = [s for s in stages if s in ("pretrain_generator", "pretrain_task", "train")]
    if "verify" in stages:
        summary["data"] = task.verify_data(cfg, [s for s in stages if s == "evaluate"])
        print(f"[verify] data found: {summary['data']}")
    checkpoint, report = import_official(official, task.NAME, out_dir / "official" / "networks.pt", cfg)
    print(describe(report))
    if "task_network" not in report["networks"]:
        raise ValueError(f"init.official={official} holds no task network (networks: {sorted(report['networks'])}); "
                         "a pretrained generator is used with `python -m sharingan.import_official` and "
                         "init.generator=<its output>")
    name = report["row_name"]
    entry: dict = {"experiment": f"{task.NAME}_official", "official": official, "checkpoint": str(checkpoint)}
    results = {}
    if "evaluate" in stages:
        eval_dir = out_dir / "eval" / f"{task.NAME}_official"
        results[name] = evaluate_checkpoint(checkpoint, eval_dir, task=task.NAME)
        entry["metrics"] = str(eval_dir / "metrics.json")
    summary["rows"][name] = entry
    return finish(task, cfg, stages, results, out_dir, summary)


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m sharingan.pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True, help="depth or normals")
    parser.add_argument("--config", default=None, help="pipeline YAML (default: the task's PIPELINE_CONFIG)")
    parser.add_argument("--root", default=None, help="folder for all run folders (default: pipeline.root)")
    args, overrides = parser.parse_known_args(argv)
    return run_pipeline(args.task, args.config, overrides, args.root)


if __name__ == "__main__":
    main(sys.argv[1:])
