"""Evaluate a text-prompted segmenter on PhraseCut, AIGI or the RefCOCO family (dissertation §3.4).

Protocol (CLIPSeg's, docs/protocols.md §5): per sample, sigmoid of the logits, bilinear resize to the
ground-truth size when they differ, then :class:`common.metrics.segmentation.ThresholdSweepMetrics`
(49 thresholds 0.02..0.98): mIoU, IoU_FG and AP, each IoU both at its best threshold and at t = 0.3.
The models' evaluation noise (ZNet / LD-ZNet's VAE posterior draw, LD-ZNet's z_t noise) is drawn per sample
from (model.eval_seed, dataset index, stream) (`ldznet.models.ldm_features.per_sample_noise`), so the
numbers do not depend on the batch size.

    python -m ldznet.eval --checkpoint C --dataset {phrasecut,aigi,refcoco,refcoco+,refcocog} --data-root R \
        [--split test] [--prompt-mode raw|template] [--limit N] --out DIR
    python -m ldznet.eval --config FILE.yaml [key=value ...]      (flags may be added and win)

The config file holds the keys of ``EVAL_DEFAULTS`` and a dataset node under ``data.test`` (for example
``defaults: [/chapter3/data/phrasecut_test]``). Writes ``DIR/metrics.json`` (metrics + a protocol block),
``DIR/config.yaml``, ``DIR/env.json`` and ``DIR/table_3_*.md/.json``: our rows beside the paper's
(experiments/chapter3/paper_tables.yaml).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader
from tqdm import tqdm

from common.checkpoints import write_json
from common.config import EXPERIMENTS_ROOT, apply_overrides, load_config, save_config
from common.metrics.segmentation import THRESHOLDS, ThresholdSweepMetrics
from common.results import write_results_table
from ldznet.data import DATASET_NAMES, build_dataset
from ldznet.models.ldm_features import per_sample_noise

PAPER_TABLES = EXPERIMENTS_ROOT / "chapter3" / "paper_tables.yaml"
DATA_CONFIGS = {
    "phrasecut": "phrasecut_test",
    "aigi": "aigi",
    "refcoco": "refcoco",
    "refcoco+": "refcoco_plus",
    "refcocog": "refcocog",
}
EVAL_DEFAULTS = {
    "checkpoint": None,
    "out": None,
    "method": None,
    "device": "cpu",
    "batch_size": 4,
    "num_workers": 0,
    "seed": 0,
    "limit": None,
    "progress": True,
}


@torch.no_grad()
def evaluate_segmenter(
    model: torch.nn.Module, dataloader, device: str | torch.device = "cpu", progress: bool = True
) -> dict:
    """Run ``model(images, prompts) -> logits (B, 1, H, W)`` over ``dataloader``; CLIPSeg metrics in percent.

    The model must already sit on ``device``; it is put in eval mode and its previous mode restored. Each
    sample's evaluation noise is keyed by its ``sample_index`` (or, in batches without one, its position in
    the whole loader), never by its position in the batch.
    Returns ``ThresholdSweepMetrics.compute()``: miou_best, fgiou_best, ap, miou_0.3, fgiou_0.3, ...
    """
    metric = ThresholdSweepMetrics()
    was_training = model.training
    model.eval()
    seen = 0
    try:
        for batch in tqdm(dataloader, desc="evaluate", disable=not progress, unit="batch"):
            images, masks, prompts = batch["image"], batch["mask"], list(batch["prompt"])
            indices = [int(i) for i in batch.get("sample_index", range(seen, seen + len(prompts)))]
            seen += len(prompts)
            if images.ndim != 4 or masks.ndim != 4 or masks.shape[1] != 1 or len(prompts) != images.shape[0]:
                raise ValueError(
                    f"batch of samples {indices}: expected image (B,3,H,W), mask (B,1,H,W) and B "
                    f"prompts, got {tuple(images.shape)}, {tuple(masks.shape)}, {len(prompts)}"
                )
            for index, prompt in zip(indices, prompts):
                if not isinstance(prompt, str) or not prompt.strip():
                    raise ValueError(f"sample {index}: empty prompt {prompt!r}")
            with per_sample_noise(model, indices):
                logits = model(images.to(device), prompts)
            if (
                not isinstance(logits, torch.Tensor)
                or logits.ndim != 4
                or logits.shape[:2] != (len(prompts), 1)
            ):
                shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
                raise ValueError(
                    f"samples {indices}: the model must return logits (B, 1, H, W) with "
                    f"B = {len(prompts)}, got {shape}"
                )
            if not torch.isfinite(logits).all():
                raise ValueError(f"samples {indices}: the model returned non-finite logits")
            probabilities = torch.sigmoid(logits.float())
            if probabilities.shape[-2:] != masks.shape[-2:]:
                probabilities = F.interpolate(
                    probabilities, size=tuple(masks.shape[-2:]), mode="bilinear", align_corners=False
                )
            probabilities = probabilities.cpu()
            for k in range(probabilities.shape[0]):
                metric.add(probabilities[k, 0], masks[k, 0])
    finally:
        model.train(was_training)
    return metric.compute()


def paper_tables_for(dataset: str, path: str | Path = PAPER_TABLES) -> dict[str, DictConfig]:
    """The paper tables (``paper_tables.yaml``) whose ``dataset`` is ``dataset``, by table key."""
    tables = OmegaConf.load(path)
    return {key: node for key, node in tables.items() if node.dataset == dataset}


def our_rows(method: str, metrics: Mapping[str, float], column_keys: Mapping[str, str]) -> list[dict]:
    """Two rows per method: every IoU at its best threshold, and at t = 0.3 (AP is threshold-free)."""
    rows = []
    for label, suffix in (("best", "_best"), ("0.3", "_0.3")):
        row = {"method": method, "threshold": label}
        for column, key in column_keys.items():
            row[column] = metrics["ap"] if key == "ap" else metrics[f"{key}{suffix}"]
        rows.append(row)
    return rows


def write_comparison_tables(
    out_dir: str | Path,
    dataset: str,
    results: Mapping[str, Mapping[str, float]],
    protocol: Mapping | None = None,
    paper_tables: str | Path = PAPER_TABLES,
) -> list[Path]:
    """Write ``<out_dir>/<table key>.md/.json`` for every paper table of ``dataset``: paper rows + ours.

    ``results`` maps a method name to its ``evaluate_segmenter`` output (several methods give one table).
    """
    written = []
    for key, table in paper_tables_for(dataset, paper_tables).items():
        columns = list(table.columns)
        column_keys = dict(table.metrics)
        rows = [row for method, metrics in results.items() for row in our_rows(method, metrics, column_keys)]
        notes = (
            f"Source: {table.source}. Paper rows: values as printed (threshold column: how the paper's IoUs "
            "were thresholded, docs/protocols.md §5). Ours: 'best' = each IoU at its best threshold "
            "of the 0.02..0.98 sweep, '0.3' = at t = 0.3; AP is threshold-free."
        )
        paper_split = table.get("split")
        if protocol and paper_split and protocol.get("split") != paper_split:
            notes += (
                f" Note: the paper's numbers are on the {paper_split} split, ours on {protocol.get('split')}."
            )
        paper_rows = [dict(row) for row in OmegaConf.to_container(table.rows)]
        written.append(
            write_results_table(
                Path(out_dir) / key,
                str(table.title),
                rows,
                [*columns, "threshold"],
                paper_rows=paper_rows,
                protocol=protocol,
                notes=notes,
                digits=1,
            )
        )
    return written


def _load_model(checkpoint: str, device: str) -> torch.nn.Module:
    """The models engineer's loader (``ldznet.checkpoints.load_segmenter``), imported when needed."""
    try:
        from ldznet.checkpoints import load_segmenter
    except ImportError as exc:
        raise RuntimeError(
            f"cannot import ldznet.checkpoints.load_segmenter to load {checkpoint}: {exc}"
        ) from exc
    return load_segmenter(checkpoint, device=device)


def build_config(args: argparse.Namespace, overrides: Sequence[str]) -> DictConfig:
    """Defaults <- config file <- dataset node for ``--dataset`` <- flags <- ``key=value`` overrides."""
    cfg = OmegaConf.create(dict(EVAL_DEFAULTS))
    if args.config:
        cfg = OmegaConf.merge(cfg, load_config(args.config))
    if args.dataset:
        has_node = "data" in cfg and "test" in cfg.data and cfg.data.test.get("name") == args.dataset
        if not has_node:  # the dataset's default node replaces whatever the config file had
            path = EXPERIMENTS_ROOT / "chapter3" / "data" / f"{DATA_CONFIGS[args.dataset]}.yaml"
            cfg = OmegaConf.merge(cfg, {"data": {"test": None}})
            cfg.data.test = load_config(path).data.test
    if "data" not in cfg or "test" not in cfg.data:
        raise ValueError("no dataset: pass --dataset NAME or a config file with a data.test node")
    flags = {
        "root": args.data_root,
        "split": args.split,
        "prompt_mode": args.prompt_mode,
        "image_size": args.image_size,
    }
    for key, value in flags.items():
        if value is not None:
            cfg.data.test[key] = value
    for key in ("checkpoint", "out", "method", "device", "batch_size", "num_workers", "seed", "limit"):
        value = getattr(args, key)
        if value is not None:
            cfg[key] = value
    cfg = apply_overrides(cfg, overrides)
    missing = [key for key in ("checkpoint", "out") if cfg.get(key) is None]
    if missing:
        raise ValueError(f"missing {missing}: pass --checkpoint and --out (or set them in the config file)")
    return cfg


def run(cfg: DictConfig, model: torch.nn.Module | None = None) -> dict:
    """Evaluate ``cfg.checkpoint`` (or an already built ``model``) and write metrics.json and the tables."""
    from common.runs import environment_record, seed_everything

    seed_everything(int(cfg.seed))
    data_node = OmegaConf.to_container(cfg.data.test, resolve=True)
    if cfg.limit is not None:
        data_node["limit"] = int(cfg.limit)
    dataset = build_dataset(data_node)
    if len(dataset) == 0:
        raise ValueError(
            f"dataset {data_node['name']} split {data_node.get('split')} at {data_node['root']} "
            "has no samples"
        )
    batch_size = 1 if data_node.get("resize") == "keep_aspect" else int(cfg.batch_size)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=int(cfg.num_workers))
    if model is None:
        model = _load_model(str(cfg.checkpoint), str(cfg.device))
    method = cfg.method or getattr(model, "variant", None) or Path(str(cfg.checkpoint)).stem
    metrics = evaluate_segmenter(model, loader, device=cfg.device, progress=bool(cfg.progress))
    protocol = {
        "dataset": data_node["name"],
        "split": data_node.get("split"),
        "image_size": data_node.get("image_size"),
        "prompt_mode": data_node.get("prompt_mode", "raw"),
        "sample_count": metrics["sample_count"],
        "thresholds": "numpy.linspace(0, 1, 51)[1:-1] (0.02..0.98), foreground = p > t",
        "threshold_count": len(THRESHOLDS),
        "crop": data_node.get("crop", False),
        "resize": data_node.get("resize", "square"),
        "seed": int(cfg.seed),
        "limit": data_node.get("limit"),
    }
    for key in ("split_by", "text_key", "template"):
        if key in data_node:
            protocol[key] = data_node[key]
    out = Path(str(cfg.out))
    result = {
        "method": str(method),
        "checkpoint": str(cfg.checkpoint),
        "data_root": str(data_node["root"]),
        "protocol": protocol,
        "metrics": metrics,
    }
    write_json(out / "metrics.json", result)
    save_config(cfg, out / "config.yaml")
    write_json(out / "env.json", environment_record())
    tables = write_comparison_tables(out, data_node["name"], {str(method): metrics}, protocol)
    result["tables"] = [str(p) for p in tables]
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ldznet.eval", description=__doc__.split("\n")[0])
    parser.add_argument("--config", help="YAML with the EVAL_DEFAULTS keys and a data.test node")
    parser.add_argument("--checkpoint", help="segmenter checkpoint (ldznet.checkpoints.load_segmenter)")
    parser.add_argument("--dataset", choices=DATASET_NAMES)
    parser.add_argument(
        "--data-root", dest="data_root", help="dataset root folder (see docs/chapter3-data.md)"
    )
    parser.add_argument(
        "--split", help="phrasecut: test/val/miniv; aigi: test; refcoco*: val/test/testA/testB"
    )
    parser.add_argument("--prompt-mode", dest="prompt_mode", choices=("raw", "template"))
    parser.add_argument("--image-size", dest="image_size", type=int)
    parser.add_argument("--limit", type=int, help="evaluate only the first N samples")
    parser.add_argument("--out", help="output folder for metrics.json and the tables")
    parser.add_argument("--method", help="row name in the tables (default: the model's variant or file stem)")
    parser.add_argument("--device")
    parser.add_argument("--batch-size", dest="batch_size", type=int)
    parser.add_argument("--num-workers", dest="num_workers", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument(
        "overrides", nargs="*", help="key=value config overrides (e.g. data.test.text_key=raw)"
    )
    args = parser.parse_args(argv)
    cfg = build_config(args, args.overrides)
    result = run(cfg)
    metrics = result["metrics"]
    print(
        f"{result['method']} on {result['protocol']['dataset']} {result['protocol']['split']} "
        f"({metrics['sample_count']} samples): mIoU best {metrics['miou_best']:.2f} / @0.3 "
        f"{metrics['miou_0.3']:.2f}, IoU_FG best {metrics['fgiou_best']:.2f} / @0.3 "
        f"{metrics['fgiou_0.3']:.2f}, "
        f"AP {metrics['ap']:.2f}"
    )
    print("wrote", Path(str(cfg.out)) / "metrics.json", *result["tables"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
