"""Monocular depth with SharinGAN (dissertation §2.2.2.3, §2.3.1; Tables 2.1, 2.2, 2.5, 2.6).

Synthetic = Virtual KITTI (depth labels), real = KITTI raw stereo (no labels; geometric consistency and
smoothness as virtual supervision). G = ResNet generator, D = image critic, T = UNet with four tanh outputs.
Evaluation: KITTI Eigen test (697 images, Garg crop, caps 50 and 80 m, prediction clamped to [1, cap], no
median scaling) and Make3D Test134 (C1, 70 m), through `common.metrics.depth`.
The interface is described in `sharingan/tasks/__init__.py`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from common.checkpoints import write_json
from common.images import load_image_rgb
from common.metrics.depth import DepthErrorAggregator
from common.results import write_results_table
from common.viz import colorize_depth, save_png
from sharingan.data.images import resize, to_network
from sharingan.data.loaders import SyntheticOnly, TwoDomainDataModule, TwoDomains
from sharingan.losses import DepthLossWeights, DepthTaskLoss, depth_from_network
from sharingan.models.critic import ImageCritic
from sharingan.models.depth_network import DepthUNet
from sharingan.models.generator import ResNetGenerator
from sharingan.schedule import batch_chunks

NAME = "depth"
PIPELINE_CONFIG = "experiments/chapter2/depth_pipeline.yaml"
MONITOR = ("val/a1", "max")  # the official code keeps the checkpoint with the best KITTI-val δ<1.25
PROGRESS_BAR_METRIC = "a1"  # the validation metric shown on the progress bar (δ<1.25)
REPO_ROOT = Path(__file__).resolve().parents[2]
PAPER_TABLES = REPO_ROOT / "experiments" / "chapter2" / "paper_tables_depth.yaml"
KITTI_COLUMNS = ["abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3"]
MAKE3D_COLUMNS = ["abs_rel", "sq_rel", "rmse", "rmse_log10"]


# ---------------------------------------------------------------------------------------------- networks
def build_networks(cfg: DictConfig) -> dict[str, nn.Module]:
    """G, D and T at the paper's sizes scaled by `model.*_width` (1.0 = paper)."""
    model = cfg.model
    return {
        "generator": ResNetGenerator(width=float(model.generator_width)),
        "critic": ImageCritic(width=float(model.critic_width), pool_size=tuple(model.critic_pool_size),
                              batch_norm=bool(model.critic_batch_norm)),
        "task_network": DepthUNet(width=float(model.task_width)),
    }


def predict_depth(generator: nn.Module | None, task_network: nn.Module, image: Tensor,
                  max_depth: float = 80.0) -> Tensor:
    """Metric depth (B, 1, H, W) in metres of T(G(x)) (full-resolution output)."""
    shared = generator(image) if generator is not None else image
    return depth_from_network(task_network(shared)[-1], max_depth)


# ------------------------------------------------------------------------------------------------- data
def _require(cfg: DictConfig, key: str, what: str) -> str:
    value = OmegaConf.select(cfg, key)
    if value in (None, ""):
        raise ValueError(f"config key {key} ({what}) is not set; pass {key}=PATH or set its environment variable")
    return str(value)


ENVIRONMENT = {"data.vkitti.root": "VKITTI_ROOT", "data.kitti.root": "KITTI_ROOT", "data.make3d.root": "MAKE3D_ROOT"}


def _root(cfg: DictConfig, key: str, what: str) -> str:
    """A data root that must exist; the error says how to set it."""
    value = _require(cfg, key, what)
    if not Path(value).is_dir():
        raise FileNotFoundError(f"{what} not found: {value!r} (set {key}=PATH or the environment variable "
                                f"{ENVIRONMENT.get(key, '?')}; see docs/chapter2-depth.md for the expected layout)")
    return value


def _lists(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def vkitti_entries(cfg: DictConfig) -> list[str]:
    from sharingan.data.vkitti import read_vkitti_list, scan_vkitti2

    node = cfg.data.vkitti
    lists = _lists(node.train_lists)
    if lists:
        entries = [entry for path in lists for entry in read_vkitti_list(path)]
    elif int(node.version) == 2:
        entries = scan_vkitti2(_root(cfg, "data.vkitti.root", "Virtual KITTI root"))
    else:
        raise ValueError("data.vkitti.train_lists is empty (vKITTI 1.3.1 needs list files)")
    return _limit(entries, node.get("limit"))


def _limit(items: list, limit: Any) -> list:
    return items[: int(limit)] if limit not in (None, "", 0) else items


def synthetic_dataset(cfg: DictConfig, augment: bool, rotation: bool = True) -> Dataset:
    from sharingan.data.vkitti import VirtualKittiDataset

    return VirtualKittiDataset(_root(cfg, "data.vkitti.root", "Virtual KITTI root"), vkitti_entries(cfg),
                               size=cfg.data.size, augment=augment,
                               rotation_degrees=float(cfg.data.rotation_degrees) if rotation else 0.0)


def real_dataset(cfg: DictConfig, augment: bool) -> Dataset:
    from sharingan.data.kitti import KittiStereoDataset, read_kitti_list

    entries = _limit(read_kitti_list(_require(cfg, "data.kitti.train_list", "KITTI stereo train list")),
                     cfg.data.kitti.get("limit"))
    return KittiStereoDataset(_root(cfg, "data.kitti.root", "KITTI raw root"), entries, size=cfg.data.size,
                              augment=augment, rotation_degrees=float(cfg.data.rotation_degrees))


def collate_eval(samples: list[dict]) -> dict:
    """Images stacked; ground-truth maps (different sizes per date) kept as a list of arrays."""
    return {"image": torch.stack([s["image"] for s in samples]), "gt": [s["gt"] for s in samples],
            "path": [s["path"] for s in samples]}


def training_dataset(cfg: DictConfig, stage: str) -> Dataset:
    """pretrain_task: vKITTI alone, flips only (the official PTNet loader); pretrain_generator and train:
    vKITTI + KITTI stereo."""
    augment = bool(cfg.data.augment)
    if stage == "pretrain_task":
        return SyntheticOnly(synthetic_dataset(cfg, augment, rotation=False))
    return TwoDomains(synthetic_dataset(cfg, augment), real_dataset(cfg, augment))


def build_datamodule(cfg: DictConfig, stage: str) -> pl.LightningDataModule:
    """Training batches of one stage (`data.batch_size.<stage>` per domain and step); the end-to-end stage also
    validates on KITTI (pretraining stages do not validate)."""
    return TwoDomainDataModule(cfg, stage, NAME, training_dataset, "data.batch_size.{stage}",
                               batch_chunks(cfg) if stage == "train" else 1, validation=validation_dataloader)


def validation_dataloader(cfg: DictConfig) -> DataLoader | None:
    """KITTI val (Godard's 888 images, or `eval.val_limit` of them) with velodyne ground truth, or None."""
    from sharingan.data.kitti import KittiDepthEvalDataset, read_kitti_list

    val_list = cfg.data.kitti.get("val_list")
    if not val_list or not cfg.eval.get("validate", True):
        return None
    entries = _limit(read_kitti_list(val_list), cfg.eval.get("val_limit"))
    dataset = KittiDepthEvalDataset(_root(cfg, "data.kitti.root", "KITTI raw root"), entries, cfg.data.size)
    return DataLoader(dataset, batch_size=int(cfg.eval.batch_size), shuffle=False, collate_fn=collate_eval,
                      num_workers=int(cfg.data.num_workers))


@torch.no_grad()
def validation_metrics(generator: nn.Module | None, task_network: nn.Module, batch: Mapping) -> dict[str, float]:
    """KITTI errors at the official validation cap (50 m), averaged over the batch's images."""
    aggregator = DepthErrorAggregator("kitti", min_depth=1.0, max_depth=50.0, garg_crop=True)
    _add_predictions(aggregator, predict_depth(generator, task_network, batch["image"]), batch["gt"])
    return {key: value for key, value in aggregator.compute().items() if key != "image_count"}


@torch.no_grad()
def validation_panels(generator: nn.Module | None, task_network: nn.Module, batch: Mapping) -> dict[str, Tensor]:
    """KITTI val: input, predicted depth and the sparse velodyne ground truth, colourised on one scale."""
    images = batch["image"][:4]
    predicted = predict_depth(generator, task_network, images).cpu()
    height, width = images.shape[-2:]
    ground_truth = torch.stack([torch.from_numpy(cv2.resize(np.asarray(gt, dtype=np.float32), (width, height),
                                                            interpolation=cv2.INTER_NEAREST))[None]
                                for gt in batch["gt"][:4]])
    return {"image": to_display(images), "depth_predicted": colorize_depth(predicted, vmax=80.0),
            "depth_ground_truth": colorize_depth(ground_truth, vmax=80.0)}


# ------------------------------------------------------------------------------------------------- loss
def build_task_loss(cfg: DictConfig) -> DepthTaskLoss:
    node = cfg.loss
    return DepthTaskLoss(DepthLossWeights(smoothness=float(node.smoothness), l1=float(node.l1),
                                          geometric_consistency=float(node.geometric_consistency),
                                          max_depth=float(node.max_depth),
                                          pretrain_all_scales=bool(node.pretrain_all_scales)))


# ---------------------------------------------------------------------------------------------- display
def to_display(image: Tensor) -> Tensor:
    return ((image.detach().float() + 1.0) / 2.0).clamp(0.0, 1.0).cpu()


def prediction_panels(predictions: Sequence[Tensor], batch: Mapping, domain: str) -> dict[str, Tensor]:
    """Colourised predicted depth, and the synthetic ground truth on the same colour scale."""
    predicted = depth_from_network(predictions[-1].detach().float().cpu())
    panels = {"depth_predicted": colorize_depth(predicted, vmax=80.0)}
    if "depth" in batch:
        panels["depth_ground_truth"] = colorize_depth(depth_from_network(batch["depth"].detach().float().cpu()),
                                                      vmax=80.0)
    return panels


# ------------------------------------------------------------------------------------------- evaluation
def _add_predictions(aggregator: DepthErrorAggregator, depth: Tensor, gts: Sequence[np.ndarray]) -> None:
    """Upsample each prediction bilinearly to its ground-truth size, then accumulate its errors."""
    for prediction, gt in zip(depth[:, 0].cpu().numpy(), gts):
        gt = np.asarray(gt, dtype=np.float64)
        upsampled = cv2.resize(prediction.astype(np.float32), (gt.shape[1], gt.shape[0]),
                               interpolation=cv2.INTER_LINEAR)
        aggregator.add(upsampled, gt)


def _run(loader: DataLoader, networks: Mapping, aggregators: Sequence[DepthErrorAggregator], device: torch.device,
         description: str) -> None:
    generator, task_network = networks.get("generator"), networks["task_network"]
    for batch in tqdm(loader, desc=description):
        with torch.no_grad():
            depth = predict_depth(generator, task_network, batch["image"].to(device))
        for aggregator in aggregators:
            _add_predictions(aggregator, depth, batch["gt"])


def evaluate(cfg: DictConfig, networks: Mapping[str, nn.Module | None], out_dir: str | Path) -> dict:
    """KITTI Eigen (caps 50 and 80 m) and/or Make3D C1 (70 m); writes metrics.json and Markdown tables."""
    from sharingan.data.kitti import KittiDepthEvalDataset, read_kitti_list
    from sharingan.data.make3d import Make3DDataset

    out_dir = Path(out_dir)
    device = torch.device("cuda" if torch.cuda.is_available() and cfg.eval.get("device", "auto") != "cpu"
                          else "cpu")
    networks = {name: (module.to(device).eval() if module is not None else None)
                for name, module in networks.items()}
    results: dict[str, Any] = {}
    benchmarks = [str(b) for b in cfg.eval.benchmarks]
    for benchmark in benchmarks:
        if benchmark == "kitti_eigen":
            entries = read_kitti_list(_require(cfg, "data.kitti.test_list", "KITTI Eigen test list"))
            entries = _limit(entries, cfg.eval.get("test_limit"))
            dataset = KittiDepthEvalDataset(_root(cfg, "data.kitti.root", "KITTI raw root"), entries,
                                            cfg.data.size, gt_file=cfg.data.kitti.get("test_gt_file"))
            aggregators = [DepthErrorAggregator("kitti", 1.0, float(cap), garg_crop=True) for cap in cfg.eval.caps]
            loader = DataLoader(dataset, batch_size=int(cfg.eval.batch_size), collate_fn=collate_eval,
                                num_workers=int(cfg.data.num_workers))
            _run(loader, networks, aggregators, device, "KITTI Eigen")
            for cap, aggregator in zip(cfg.eval.caps, aggregators):
                results[f"kitti_eigen_cap{int(cap)}"] = {"metrics": aggregator.compute(),
                                                          "protocol": {**aggregator.protocol_block(),
                                                                       "split": "eigen_test",
                                                                       "list": str(cfg.data.kitti.test_list)}}
        elif benchmark == "make3d":
            dataset = Make3DDataset(_root(cfg, "data.make3d.root", "Make3D root"), cfg.data.size,
                                    resize_hw=cfg.data.make3d.resize_hw, crop_hw=cfg.data.make3d.crop_hw)
            if cfg.eval.get("test_limit"):
                dataset = Subset(dataset, range(min(int(cfg.eval.test_limit), len(dataset))))
            aggregator = DepthErrorAggregator("make3d", max_depth=70.0)
            loader = DataLoader(dataset, batch_size=int(cfg.eval.batch_size), collate_fn=collate_eval,
                                num_workers=int(cfg.data.num_workers))
            _run(loader, networks, [aggregator], device, "Make3D")
            results["make3d_c1"] = {"metrics": aggregator.compute(),
                                    "protocol": {**aggregator.protocol_block(), "split": "Test134",
                                                 "crop": f"resize {list(cfg.data.make3d.resize_hw)} -> centre "
                                                         f"{list(cfg.data.make3d.crop_hw)}"}}
        else:
            raise ValueError(f"unknown benchmark {benchmark!r} in eval.benchmarks (kitti_eigen, make3d)")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "metrics.json", results)
    write_tables(cfg, {str(cfg.eval.row_name): results}, out_dir)
    return results


def load_paper_tables() -> DictConfig:
    if not PAPER_TABLES.is_file():
        raise FileNotFoundError(f"paper numbers not found: {PAPER_TABLES}")
    return OmegaConf.load(PAPER_TABLES)


TABLES = {  # table id -> (benchmark key, columns, paper rows key, title)
    "table_2_1_cap80": ("kitti_eigen_cap80", KITTI_COLUMNS, "table_2_1_cap80",
                        "Table 2.1: KITTI Eigen test, cap 80 m"),
    "table_2_1_cap50": ("kitti_eigen_cap50", KITTI_COLUMNS, "table_2_1_cap50",
                        "Table 2.1: KITTI Eigen test, cap 50 m"),
    "table_2_2": ("make3d_c1", MAKE3D_COLUMNS, "table_2_2", "Table 2.2: Make3D (C1, 70 m)"),
    "table_2_5": ("kitti_eigen_cap50", KITTI_COLUMNS, "table_2_5", "Table 2.5: ablations, KITTI cap 50 m"),
    "table_2_6": ("make3d_c1", MAKE3D_COLUMNS, "table_2_6", "Table 2.6: ablations, Make3D 70 m"),
}


def write_tables(cfg: DictConfig, results: Mapping[str, Mapping], out_dir: str | Path) -> list[Path]:
    """Our rows (one per experiment) beside the dissertation's, for every table with at least one of ours.

    `results`: {row name: {benchmark key: {"metrics": ..., "protocol": ...}}}. Tables 2.5/2.6 take only the
    rows whose name appears among the paper's ablation rows (matched by `row_name`).
    """
    paper = load_paper_tables()
    written = []
    for table, (benchmark, columns, paper_key, title) in TABLES.items():
        paper_rows = [dict(row) for row in OmegaConf.to_container(paper[paper_key].rows)]
        allowed = {row["method"] for row in paper_rows} if table in ("table_2_5", "table_2_6") else None
        rows, protocol = [], None
        for name, result in results.items():
            if benchmark not in result or (allowed is not None and name not in allowed):
                continue
            rows.append({"method": name, **{c: result[benchmark]["metrics"].get(c) for c in columns}})
            protocol = result[benchmark]["protocol"]
        if rows:
            written.append(write_results_table(Path(out_dir) / table, title, rows, columns, paper_rows,
                                               protocol=protocol, notes=str(paper[paper_key].get("source", ""))))
    return written


# ---------------------------------------------------------------------------------------------- predict
def write_depth_png_16bit(path: str | Path, depth_m: np.ndarray) -> Path:
    """Metric depth as a 16-bit PNG in KITTI's convention: value = metres x 256, 0 = invalid."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    encoded = np.clip(np.round(np.asarray(depth_m, dtype=np.float64) * 256.0), 0, 65535).astype(np.uint16)
    return save_png(path, encoded)  # atomic: an interrupted write leaves no half-written PNG


def predict(cfg: DictConfig, networks: Mapping[str, nn.Module | None], inputs: Sequence[Path],
            out_dir: str | Path) -> list[Path]:
    """Per image: `<stem>_depth.png` (colourised) and `<stem>_depth16.png` (metres x 256, 16-bit), at the
    input's resolution (the prediction is made at the network size and resized bilinearly)."""
    out_dir = Path(out_dir)
    generator, task_network = networks.get("generator"), networks["task_network"]
    size = tuple(int(v) for v in cfg.data.size)
    written = []
    for path in tqdm(inputs, desc="predict"):
        image, note = load_image_rgb(path)
        if note:
            tqdm.write(f"note: {note}")
        x = to_network(resize(image, size, cv2.INTER_CUBIC))[None]
        with torch.no_grad():
            depth = predict_depth(generator, task_network, x)[0, 0].numpy()
        depth = cv2.resize(depth, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
        stem = Path(path).stem
        written.append(save_png(out_dir / f"{stem}_depth.png", colorize_depth(depth, vmax=80.0)))
        written.append(write_depth_png_16bit(out_dir / f"{stem}_depth16.png", depth))
    return written


# --------------------------------------------------------------------------------------------- pipeline
def verify_data(cfg: DictConfig, stages: Sequence[str]) -> dict[str, int]:
    """Check the data every stage needs (roots, list files, first sample of each) before any training."""
    from sharingan.data.kitti import read_kitti_list
    from sharingan.data.make3d import list_make3d

    summary: dict[str, int] = {}
    training = {"pretrain_generator", "pretrain_task", "train"} & set(stages)
    if training:
        synthetic = synthetic_dataset(cfg, augment=False)
        synthetic[0]
        summary["vkitti_train"] = len(synthetic)
    if {"pretrain_generator", "train"} & set(stages):
        real = real_dataset(cfg, augment=False)
        real[0]
        summary["kitti_train"] = len(real)
        if cfg.data.kitti.get("val_list") and cfg.eval.get("validate", True):
            summary["kitti_val"] = len(read_kitti_list(cfg.data.kitti.val_list))
    if "evaluate" in stages:
        benchmarks = [str(b) for b in cfg.eval.benchmarks]
        if "kitti_eigen" in benchmarks:
            entries = read_kitti_list(_require(cfg, "data.kitti.test_list", "KITTI Eigen test list"))
            root = Path(_root(cfg, "data.kitti.root", "KITTI raw root"))
            first = entries[0]
            for relative in (first.left, first.velodyne, f"{first.calib_dir}/calib_cam_to_cam.txt"):
                if not (root / relative).is_file() and not cfg.data.kitti.get("test_gt_file"):
                    raise FileNotFoundError(f"KITTI Eigen test file missing: {root / relative} "
                                            "(expected the KITTI raw layout, see sharingan/data/kitti.py)")
            summary["kitti_eigen_test"] = len(entries)
        if "make3d" in benchmarks:
            summary["make3d_test"] = len(list_make3d(_root(cfg, "data.make3d.root", "Make3D root")))
    return summary
