"""Chapter 3 end to end (`make chapter3`): verify SD + data -> train each variant -> evaluate -> tables.

    python -m ldznet.pipeline [experiments/chapter3/pipeline.yaml] [key=value ...]

1. Verify: load the Stable Diffusion components (sha256 recorded) and open every dataset (training,
   validation and each evaluation set); all problems are reported together before any training starts.
2. Train RGBNet, ZNet, LD-ZNet and LD-ZNet-concat with the same settings (`ldznet.train`), unless
   `pipeline.checkpoints.<variant>` names an existing segmenter to evaluate instead.
3. Evaluate every model on every selected dataset with the CLIPSeg protocol (`ldznet.eval`, EMA weights).
4. Write Tables 3.1-3.4 (our rows beside the paper's) as Markdown + JSON under `<pipeline.out>/tables/`,
   and `<pipeline.out>/metrics.json` with every number, the run folders and the SD record.

On several GPUs, train each variant with `python -m ldznet.train experiments/chapter3/<variant>.yaml
trainer.devices=N` and then run the pipeline with `pipeline.checkpoints.<variant>=<run>/segmenter.pt`
(the pipeline itself is one process: Lightning's DDP launcher would re-run all of it on every rank).
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from common.checkpoints import write_json
from common.config import EXPERIMENTS_ROOT, load_config, parse_cli, save_config
from common.runs import environment_record
from ldznet.checkpoints import load_segmenter
from ldznet.data import build_dataset
from ldznet.eval import evaluate_segmenter, write_comparison_tables
from ldznet.models import VARIANTS
from ldznet.stable_diffusion import components_from_config
from ldznet.train import train

DEFAULT_CONFIG = EXPERIMENTS_ROOT / "chapter3" / "pipeline.yaml"
METHOD_NAMES = {"rgbnet": "RGBNet", "znet": "ZNet", "ldznet": "LD-ZNet",
                "ldznet_concat": "LD-ZNet with concatenation"}


def evaluation_node(entry: DictConfig) -> dict:
    """The `data.test` node of the entry's dataset config file, with the entry's non-null overrides."""
    node = OmegaConf.to_container(load_config(EXPERIMENTS_ROOT / "chapter3" / f"{entry.config}.yaml").data.test,
                                  resolve=True)
    for key, value in OmegaConf.to_container(entry, resolve=True).items():
        if key != "config" and value is not None:
            node[key] = value
    return node


def evaluation_nodes(cfg: DictConfig) -> dict[str, dict]:
    datasets = cfg.pipeline.evaluation.datasets
    unknown = [name for name in cfg.pipeline.evaluation.use if name not in datasets]
    if unknown:
        raise ValueError(f"pipeline.evaluation.use names unknown datasets {unknown}; known: {list(datasets)}")
    return {str(name): evaluation_node(datasets[name]) for name in cfg.pipeline.evaluation.use}


def verify(cfg: DictConfig) -> dict:
    """Load SD and open every dataset; raise one error listing every problem."""
    problems, report = [], {}
    try:
        components = components_from_config(cfg.model.stable_diffusion)
        report["stable_diffusion"] = components.record
        del components
    except (OSError, ValueError) as error:
        problems.append(f"Stable Diffusion: {error}")
    nodes = {"train": cfg.data.train, "val": cfg.data.val}
    nodes.update({f"evaluate {name}": node for name, node in evaluation_nodes(cfg).items()})
    report["datasets"] = {}
    for label, node in nodes.items():
        try:
            report["datasets"][label] = len(build_dataset(node))
            if report["datasets"][label] == 0:
                problems.append(f"dataset {label}: no samples in {node['root']}")
        except (OSError, ValueError) as error:
            problems.append(f"dataset {label}: {error}")
    if problems:
        raise RuntimeError("chapter 3 pipeline cannot start:\n  - " + "\n  - ".join(problems))
    return report


def variant_config(cfg: DictConfig, variant: str) -> DictConfig:
    if variant not in VARIANTS:
        raise ValueError(f"pipeline.variants: unknown variant {variant!r}; valid: {VARIANTS}")
    variant_cfg = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "pipeline"])
    variant_cfg.model.variant = variant
    variant_cfg.experiment = variant
    return variant_cfg


def resolve_device(name: str) -> str:
    return ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name


def run_pipeline(cfg: DictConfig) -> dict:
    pipeline = cfg.pipeline
    out = Path(str(pipeline.out))
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    write_json(out / "env.json", environment_record())
    summary: dict = {"verify": verify(cfg), "runs": {}, "results": {}}
    write_json(out / "metrics.json", summary)

    checkpoints = OmegaConf.to_container(pipeline.checkpoints, resolve=True) or {}
    for variant in pipeline.variants:
        if checkpoints.get(variant):
            summary["runs"][variant] = {"segmenter": str(checkpoints[variant]), "trained_here": False}
            continue
        run_dir = train(variant_config(cfg, variant), root=str(pipeline.runs_root))
        summary["runs"][variant] = {"run_dir": str(run_dir), "segmenter": str(run_dir / "segmenter.pt"),
                                    "trained_here": True}
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        write_json(out / "metrics.json", summary)

    evaluation = pipeline.evaluation
    device = resolve_device(str(evaluation.device))
    tables = []
    for name, node in evaluation_nodes(cfg).items():
        dataset = build_dataset(node, limit=evaluation.limit)
        batch_size = 1 if node.get("resize") == "keep_aspect" else int(evaluation.batch_size)
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=int(evaluation.num_workers))
        results = {}
        for variant, run in summary["runs"].items():
            model = load_segmenter(run["segmenter"], device=device, variant=variant, task=str(cfg.task))
            results[METHOD_NAMES[variant]] = evaluate_segmenter(model, loader, device=device)
            del model
            gc.collect()
        protocol = {"dataset": node["name"], "split": node.get("split"), "image_size": node.get("image_size"),
                    "prompt_mode": node.get("prompt_mode", "raw"), "sample_count": len(dataset),
                    "weights": "EMA", "ldm_eval_timestep": int(cfg.model.ldm.eval_timestep),
                    "eval_seed": int(cfg.model.eval_seed)}
        summary["results"][name] = {"protocol": protocol, "metrics": results}
        tables += write_comparison_tables(out / "tables" / name, node["name"], results, protocol)
        write_json(out / "metrics.json", summary)
    summary["tables"] = [str(path) for path in tables]
    write_json(out / "metrics.json", summary)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    config, overrides = parse_cli(sys.argv[1:] if argv is None else argv, prog="python -m ldznet.pipeline",
                                  description=__doc__, default=DEFAULT_CONFIG)
    try:
        summary = run_pipeline(load_config(config, overrides))
    except RuntimeError as error:
        if "cannot start" not in str(error):
            raise
        print(error, file=sys.stderr)
        return 2
    for name, result in summary["results"].items():
        for method, metrics in result["metrics"].items():
            print(f"{name:12s} {method:28s} mIoU {metrics['miou_best']:5.1f}  IoU_FG {metrics['fgiou_best']:5.1f}  "
                  f"AP {metrics['ap']:5.1f}")
    print("tables:", *summary["tables"], sep="\n  ")
    return 0


if __name__ == "__main__":
    sys.exit(main())
