"""Per-image values of the chapters' evaluation, for the miniature's evaluation noise (bootstrap over images).

The chapters' `evaluate` functions return dataset numbers only. These loops run the *same* pieces (the
chapters' datasets, `predict_depth` + `_add_predictions` + `DepthErrorAggregator`, `shared_and_predict` +
`decode_normals` + `angular_errors_deg`, `lighting_class_scores` + `topk_accuracy`, the segmenter's sigmoid,
resize and `ThresholdSweepMetrics`) and keep one value per test image, so that the report can resample
images. The floors module scores floors with the chapters' own `evaluate` functions; the report checks
that the mean of these per-image values agrees with the table numbers (`agreement`).

Per-image statistics: depth errors are per-image means in the protocol (the bootstrap mean is exact);
Photoface MAE is a mean of batch means in the protocol, here the mean of per-image masked means (close,
not identical); Multi-PIE top-1 is a 0/100 hit per image (the leave-one-subject-out prototypes are kept
fixed); segmentation keeps each sample's IoU at the 49 thresholds (mIoU "best" = max of their mean: exact).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader, Subset

from common.metrics.depth import DepthErrorAggregator
from common.metrics.lighting import topk_accuracy
from common.metrics.normals import angular_errors_deg
from common.metrics.segmentation import ThresholdSweepMetrics

# Chapter code (sharingan.*, ldznet.*) is imported inside the functions: demo.plan imports this module (through
# demo.floors) for `python -m demo --list` and for every worker process, which must not need the chapters (a
# missing one is reported "not run: missing chapter code"); sharingan.tasks.* costs ~3.7 s to import (measured).


class RecordingDepthAggregator(DepthErrorAggregator):
    """`DepthErrorAggregator` that also keeps each image's errors."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.per_image: list[dict[str, float]] = []

    def add(self, pred, gt) -> dict[str, float]:
        errors = super().add(pred, gt)
        self.per_image.append(errors)
        return errors


def _columns(per_image: list[dict[str, float]]) -> dict[str, np.ndarray]:
    return {key: np.array([row[key] for row in per_image]) for key in per_image[0]} if per_image else {}


def on_cpu(networks: Mapping[str, nn.Module | None]) -> dict[str, nn.Module | None]:
    """The networks on the CPU in eval mode: per-image scoring runs there even when the chapter's own evaluate
    (eval.device, `auto` = the GPU when one is visible) has just moved the same modules to a GPU."""
    return {name: (module.to("cpu").eval() if module is not None else None) for name, module in networks.items()}


@torch.no_grad()
def depth_per_image(cfg: DictConfig, networks: Mapping[str, nn.Module | None]) -> dict[str, dict[str, np.ndarray]]:
    """{benchmark key as in metrics.json: {metric: (N,) per-image values}} for `cfg.eval.benchmarks`."""
    from sharingan.data.kitti import KittiDepthEvalDataset, read_kitti_list
    from sharingan.data.make3d import Make3DDataset
    from sharingan.tasks import depth as task

    networks = on_cpu(networks)
    out: dict[str, dict[str, np.ndarray]] = {}
    for benchmark in [str(b) for b in cfg.eval.benchmarks]:
        if benchmark == "kitti_eigen":
            entries = task._limit(read_kitti_list(str(cfg.data.kitti.test_list)), cfg.eval.get("test_limit"))
            dataset = KittiDepthEvalDataset(str(cfg.data.kitti.root), entries, cfg.data.size,
                                            gt_file=cfg.data.kitti.get("test_gt_file"))
            aggregators = [RecordingDepthAggregator("kitti", 1.0, float(cap), garg_crop=True) for cap in cfg.eval.caps]
            keys = [f"kitti_eigen_cap{int(cap)}" for cap in cfg.eval.caps]
        elif benchmark == "make3d":
            dataset = Make3DDataset(str(cfg.data.make3d.root), cfg.data.size, resize_hw=cfg.data.make3d.resize_hw,
                                    crop_hw=cfg.data.make3d.crop_hw)
            if cfg.eval.get("test_limit"):
                dataset = Subset(dataset, range(min(int(cfg.eval.test_limit), len(dataset))))
            aggregators, keys = [RecordingDepthAggregator("make3d", max_depth=70.0)], ["make3d_c1"]
        else:
            raise ValueError(f"unknown benchmark {benchmark!r} in eval.benchmarks (kitti_eigen, make3d)")
        loader = DataLoader(dataset, batch_size=int(cfg.eval.batch_size), collate_fn=task.collate_eval)
        task._run(loader, networks, aggregators, torch.device("cpu"), f"per-image {benchmark}")
        for key, aggregator in zip(keys, aggregators):
            out[key] = _columns(aggregator.per_image)
    return out


@torch.no_grad()
def faces_per_image(cfg: DictConfig, networks: Mapping[str, nn.Module | None]) -> dict[str, dict[str, np.ndarray]]:
    """{"photoface": {"mae_deg": (N,)}, "multipie": {"top1": (N,) of 0 or 100}} for the data roots set."""
    from sharingan.data.multipie import lighting_class_scores
    from sharingan.models.sfsnet import decode_normals
    from sharingan.tasks import normals as task

    networks = on_cpu(networks)
    generator, task_network = networks.get("generator"), networks["task_network"]
    out: dict[str, dict[str, np.ndarray]] = {}
    batch_size = int(cfg.eval.batch_size)
    if cfg.data.get("photoface_root"):
        errors = []
        for batch in DataLoader(task.photoface_data(cfg, str(cfg.eval.photoface_split)), batch_size=batch_size):
            _, prediction = task.shared_and_predict(generator, task_network, batch["image"])
            normals = decode_normals(prediction["normal"])
            for k in range(normals.shape[0]):
                values = angular_errors_deg(normals[k:k + 1], batch["normal"][k:k + 1], batch["mask"][k:k + 1])
                errors.append(float(values.mean()) if values.size else float("nan"))
        out["photoface"] = {"mae_deg": np.array(errors)}
    if cfg.data.get("multipie_root"):
        dataset = task.multipie_data(cfg)
        lighting, labels, subjects = [], [], []
        for batch in DataLoader(dataset, batch_size=batch_size):
            _, prediction = task.shared_and_predict(generator, task_network, batch["image"])
            lighting.append(prediction["lighting"].double().numpy())
            labels += [int(v) for v in batch["label"]]
            subjects += [int(v) for v in batch["subject"]]
        scores = lighting_class_scores(np.concatenate(lighting), labels, subjects, len(dataset.shots))
        out["multipie"] = {"top1": np.array([topk_accuracy(scores[i:i + 1], labels[i:i + 1], 1)
                                             for i in range(len(labels))])}
    return out


@torch.no_grad()
def segmentation_curves(model: nn.Module, loader: DataLoader, device: str = "cpu") -> np.ndarray:
    """(N, 49) IoU of every sample at every threshold (CLIPSeg protocol, as `ldznet.eval.evaluate_segmenter`)."""
    try:  # the per-sample evaluation noise keys of `evaluate_segmenter` (absent in older chapter code)
        from ldznet.models.ldm_features import per_sample_noise
    except ImportError:
        def per_sample_noise(model, keys):
            return contextlib.nullcontext()
    was_training = model.training
    model.eval()
    curves, seen = [], 0
    try:
        for batch in loader:
            masks, prompts = batch["mask"], list(batch["prompt"])
            indices = [int(i) for i in batch.get("sample_index", range(seen, seen + len(prompts)))]
            seen += len(prompts)
            with per_sample_noise(model, indices):
                logits = model(batch["image"].to(device), prompts)
            probabilities = torch.sigmoid(logits.float())
            if probabilities.shape[-2:] != masks.shape[-2:]:
                probabilities = F.interpolate(probabilities, size=tuple(masks.shape[-2:]), mode="bilinear",
                                              align_corners=False)
            probabilities = probabilities.cpu()
            for k in range(probabilities.shape[0]):
                metric = ThresholdSweepMetrics()
                metric.add(probabilities[k, 0], masks[k, 0])
                curves.append(metric.per_sample_iou[0])
    finally:
        model.train(was_training)
    return np.stack(curves)


def save_per_image(path: Path, values: Mapping[str, np.ndarray]) -> Path:
    """Write {name: array} as one .npz (atomic: temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(temporary, **{key: np.asarray(value) for key, value in values.items()})
    os.replace(temporary, path)
    return path


def per_image_key(row: str, seed: int | str | None, benchmark: str, metric: str) -> str:
    return f"{row}|{'-' if seed is None else seed}|{benchmark}|{metric}"


def load_per_image(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}
