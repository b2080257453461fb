"""Face normal estimation with SharinGAN (dissertation §2.2.2.4, §2.3.2; Tables 2.3 and 2.4, Fig 2.7).

G = RBDN, D = the face critic (no batch norm), T = SfSNet (normals, albedo, 27-d SH lighting). Synthetic
data = SfSNet's renders with ground truth; real data = CelebA with pseudo-labels from the synthetically
pretrained SfSNet (`sharingan.pseudo_labels`); L_T = L_sfs(real) + L_sfs(synthetic) (Eq. 2.9), α = (1, 10, 0.1).
Benchmarks: Photoface test normals (MAE, <20°, <25°, <30°) and Multi-PIE lighting classification (top-1/2/3).
Images are [0, 1] RGB at 128x128 throughout (no [-1, 1] normalisation, as in the official face code).

This module is the task interface of `sharingan/tasks/__init__.py`; the generic commands dispatch here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from common.checkpoints import sha256_of_file, write_json
from common.config import require
from common.images import load_image_rgb
from common.metrics.lighting import topk_accuracy
from common.metrics.normals import PhotofaceAggregator, normal_errors
from common.results import write_results_table
from common.viz import normals_to_rgb, save_png
from sharingan.data.celeba import CelebAImages, pseudo_labelled_dataset
from sharingan.data.loaders import SyntheticOnly, TwoDomainDataModule, TwoDomains
from sharingan.data.multipie import MultiPIEDataset, lighting_class_scores
from sharingan.data.photoface import PhotofaceDataset
from sharingan.data.sfsnet_synthetic import read_light, synthetic_dataset, write_light
from sharingan.face_losses import TERMS, SfSWeights, sfs_supervision
from sharingan.models.face_critic import FaceCritic
from sharingan.models.rbdn import RBDN
from sharingan.models.sfsnet import SfSNet, decode_normals, render
from sharingan.pseudo_labels import face_image_size as image_size  # the pseudo-labeller reads it too
from sharingan.pseudo_labels import label_from_checkpoint
from sharingan.schedule import batch_chunks

NAME = "normals"
PIPELINE_CONFIG = "experiments/chapter2/faces_pipeline.yaml"
MONITOR = ("val/mae_deg", "min")  # the official code selects the best Photoface-val checkpoint
PROGRESS_BAR_METRIC = "mae_deg"  # the validation metric shown on the progress bar
PAPER_TABLES = Path(__file__).resolve().parents[2] / "experiments" / "chapter2" / "paper_tables_faces.yaml"
FACES_BASE = "experiments/chapter2/faces_base.yaml"  # holds sfs_weights (Eq. 2.9)


# ------------------------------------------------------------------------------------------------ networks
def build_networks(cfg: DictConfig) -> dict[str, nn.Module]:
    """RBDN, face critic and SfSNet at the sizes of `cfg.model` (paper sizes at width 1)."""
    model = cfg.model
    return {
        "generator": RBDN(width=float(model.generator.width), branches=int(model.generator.branches),
                          trunk_layers=int(model.generator.trunk_layers)),
        "critic": FaceCritic(image_size=image_size(cfg), width=float(model.critic.width)),
        "task_network": SfSNet(width=float(model.task_network.width), blocks=int(model.task_network.blocks)),
    }


def shared_and_predict(generator: nn.Module | None, task_network: nn.Module, image: Tensor
                       ) -> tuple[Tensor, dict[str, Tensor]]:
    shared = generator(image) if generator is not None else image
    return shared, task_network(shared)


# ---------------------------------------------------------------------------------------------------- data
def _require(cfg: DictConfig, key: str, what: str) -> str:
    value = OmegaConf.select(cfg, key)
    if value in (None, "", "???"):
        raise ValueError(f"config key {key} is not set: {what}")
    return str(value)


def synthetic_data(cfg: DictConfig, split: str = "train") -> Dataset:
    root, csv_path = cfg.data.get("synthetic_root"), cfg.data.get("synthetic_csv")
    if not root and not csv_path:
        raise ValueError("config keys data.synthetic_root / data.synthetic_csv are both unset: point one of them "
                         "at the SfSNet synthetic faces (folder of <id>_face_<i>_<j>.png ... or Syn_train.csv)")
    return synthetic_dataset(root or None, csv_path or None, split, image_size(cfg),
                             float(cfg.data.synthetic_val_fraction), bool(cfg.data.get("strict", True)))


def celeba_images(cfg: DictConfig, split: str = "train", limit: int | None = None) -> Dataset:
    root = _require(cfg, "data.celeba_root", "the CelebA folder (img_align_celeba/, list_eval_partition.txt)")
    center = cfg.data.get("celeba_crop_center")
    limit = limit if limit is not None else cfg.data.get("celeba_limit")
    return CelebAImages(root, split, image_size(cfg), int(cfg.data.celeba_crop_size),
                        list(center) if center is not None else None, limit)


def celeba_mask_mode(cfg: DictConfig) -> str:
    """`data.celeba_mask`: 'landmarks' (face ellipse from list_landmarks_align_celeba.txt) or 'none'."""
    mode = str(cfg.data.get("celeba_mask", "landmarks"))
    if mode not in ("landmarks", "none"):
        raise ValueError(f"config key data.celeba_mask must be 'landmarks' or 'none', got {mode!r}")
    return mode


def celeba_labels_csv(cfg: DictConfig, split: str = "train") -> Path:
    folder = _require(cfg, "data.celeba_labels", "the pseudo-label folder written by sharingan.pseudo_labels, "
                      "or 'auto'")
    if folder == "auto":
        raise ValueError("data.celeba_labels is 'auto': call resolve_pseudo_labels(cfg) first")
    return Path(folder) / f"celeba_{split}.csv"


def resolve_pseudo_labels(cfg: DictConfig, device: str | None = None) -> DictConfig:
    """`data.celeba_labels: auto` -> label CelebA with the synthetically pretrained SfSNet of
    `init.task_network` (the stage between T's pretraining and end-to-end training, §2.2.2.4), cached in
    `<that run>/pseudo_labels/` and reused while checkpoint, crop and limit are unchanged. Returns the config
    with `data.celeba_labels` set to the folder (unchanged when it already names one)."""
    if str(cfg.data.get("celeba_labels")) != "auto":
        return cfg
    checkpoint = cfg.init.get("task_network")
    if not checkpoint:
        raise ValueError("data.celeba_labels=auto needs init.task_network (the SfSNet pretrained on synthetic "
                         "faces, stage pretrain_task) to make the CelebA pseudo-labels; or set data.celeba_labels "
                         "to a folder written by `python -m sharingan.pseudo_labels`")
    checkpoint = Path(checkpoint)
    out_dir = checkpoint.resolve().parent.parent / "pseudo_labels"
    center = cfg.data.get("celeba_crop_center")
    settings = {"checkpoint_sha256": sha256_of_file(checkpoint), "image_size": image_size(cfg),
                "crop_size": int(cfg.data.celeba_crop_size), "crop_center": list(center) if center else None,
                "limit": cfg.data.get("celeba_limit"), "mask": celeba_mask_mode(cfg),
                "celeba_root": _require(cfg, "data.celeba_root", "the CelebA folder")}
    record = out_dir / "pseudo_labels.json"
    current = json.loads(record.read_text()) if record.is_file() else {}
    if any(current.get(key) != value for key, value in settings.items()) or \
            not (out_dir / "celeba_train.csv").is_file():
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        print(f"[pseudo_labels] labelling CelebA ({settings['celeba_root']}) with {checkpoint} -> {out_dir}")
        label_from_checkpoint(checkpoint, settings["celeba_root"], out_dir, "train", settings["image_size"],
                              settings["crop_size"], settings["crop_center"], int(cfg.eval.batch_size), device,
                              settings["limit"], mask=settings["mask"])
    cfg = cfg.copy()
    cfg.data.celeba_labels = str(out_dir)
    return cfg


def celeba_pseudo_labelled(cfg: DictConfig, split: str = "train") -> Dataset:
    path = celeba_labels_csv(cfg, split)
    if not path.is_file():
        raise FileNotFoundError(f"CelebA pseudo-labels missing: {path} (run `python -m sharingan.pseudo_labels "
                                f"--checkpoint <pretrained SfSNet> --input <celeba> --out {path.parent}`)")
    return pseudo_labelled_dataset(path, "all", image_size(cfg))


def photoface_data(cfg: DictConfig, split: str) -> Dataset:
    root = _require(cfg, "data.photoface_root", "the folder holding photoface-results/")
    lists = cfg.data.get("photoface_lists") or root
    return PhotofaceDataset(root, lists, split, image_size(cfg), cfg.data.get("photoface_limit"))


def multipie_data(cfg: DictConfig) -> Dataset:
    node = cfg.eval.multipie
    root = _require(cfg, "data.multipie_root", "Multi-PIE's data/ folder (session0S/multiview/...)")
    return MultiPIEDataset(root, str(node.camera), [list(r) for r in node.recordings], list(node.shots),
                           int(node.crop_size), image_size(cfg), cfg.data.get("multipie_limit"))


def mean_lighting(dataset: Dataset, limit: int = 10000) -> np.ndarray:
    """Mean 27-d lighting label over the first `limit` records of a `FaceLabelDataset` (labels only, no images)."""
    records = getattr(dataset, "records", None)
    if not records:
        raise ValueError("mean_lighting: the dataset has no face records with lighting labels")
    labels = [read_light(r.lighting) if isinstance(r.lighting, Path) else np.asarray(r.lighting, dtype=np.float64)
              for r in records[:limit]]
    return np.mean(np.stack(labels).astype(np.float64), axis=0).astype(np.float32)


def training_dataset(cfg: DictConfig, stage: str) -> Dataset:
    """pretrain_generator: synthetic + raw CelebA images; pretrain_task: synthetic with ground truth;
    train: synthetic with ground truth + CelebA with pseudo-labels."""
    if stage == "pretrain_generator":
        return TwoDomains(synthetic_data(cfg, "train"), celeba_images(cfg, "train"))
    if stage == "pretrain_task":
        return SyntheticOnly(synthetic_data(cfg, "train"))
    return TwoDomains(synthetic_data(cfg, "train"), celeba_pseudo_labelled(cfg, "train"))


def initialise_lighting(datamodule: TwoDomainDataModule) -> bool:
    """`model.task_network.lighting_init: label_mean` (default): start SfSNet's light layer at the mean
    lighting label of the synthetic training set instead of the Caffe bias of 1 on all 27 coefficients, which
    lies ~0.9 RMS from every label (docs/chapter2-faces.md). Runs at the data module's setup, before a resumed
    run restores its weights, so a resume is unaffected. `caffe` keeps the Caffe initialisation. Returns
    whether it is done (not yet when set up outside a trainer: inspection, verify)."""
    mode = str(OmegaConf.select(datamodule.cfg, "model.task_network.lighting_init", default="label_mean"))
    if mode == "caffe":
        return True
    if mode != "label_mean":
        raise ValueError(f"config key model.task_network.lighting_init must be label_mean or caffe, got {mode!r}")
    trainer = datamodule.trainer
    network = getattr(getattr(trainer, "lightning_module", None) if trainer is not None else None, "task_network",
                      None)
    if network is None:
        return False
    network.set_lighting_bias(torch.from_numpy(mean_lighting(datamodule.dataset.synthetic)))
    return True


def build_datamodule(cfg: DictConfig, stage: str) -> pl.LightningDataModule:
    """Training batches of one stage (`training_dataset`; `data.batch_size` per domain and step); the "train"
    stage labels CelebA first when data.celeba_labels=auto and validates on Photoface; "pretrain_task" starts
    SfSNet's light layer (`initialise_lighting`)."""
    if stage == "train":
        cfg = resolve_pseudo_labels(cfg)
    return TwoDomainDataModule(cfg, stage, NAME, training_dataset, "data.batch_size",
                               batch_chunks(cfg) if stage == "train" else 1, validation=validation_dataloader,
                               before_training=initialise_lighting if stage == "pretrain_task" else None)


def validation_dataloader(cfg: DictConfig) -> DataLoader | None:
    """Photoface val (last 15 % of the train list) when data.photoface_root is set, else None."""
    if not cfg.data.get("photoface_root") or not cfg.eval.get("validate_on_photoface", True):
        return None
    return DataLoader(photoface_data(cfg, "val"), batch_size=int(cfg.eval.batch_size), shuffle=False,
                      num_workers=int(cfg.data.num_workers))


@torch.no_grad()
def validation_metrics(generator: nn.Module | None, task_network: nn.Module, batch: Mapping) -> dict[str, float]:
    _, prediction = shared_and_predict(generator, task_network, batch["image"])
    return normal_errors(decode_normals(prediction["normal"]), batch["normal"], batch["mask"])


# ---------------------------------------------------------------------------------------------------- loss
class FaceTaskLoss:
    """L_T for faces: SfS supervision (Eq. 2.9) with ground truth (synthetic) or pseudo-labels (real)."""

    def __init__(self, weights: SfSWeights) -> None:
        self.weights = weights

    def _domain(self, predictions: Mapping[str, Tensor], batch: Mapping, name: str
                ) -> tuple[Tensor, dict[str, Tensor]]:
        terms = sfs_supervision(predictions, batch, batch["image"], self.weights)
        return terms["total"], {f"task/{name}/{key}": value.detach() for key, value in terms.items()}

    def synthetic(self, predictions, batch):
        return self._domain(predictions, batch, "sfs_synthetic")

    def real(self, predictions, batch):
        return self._domain(predictions, batch, "sfs_real")

    def pretrain(self, predictions, batch):
        return self._domain(predictions, batch, "pretrain_sfs")


def build_task_loss(cfg: DictConfig) -> FaceTaskLoss:
    """Eq. 2.9's weights from `sfs_weights` of the config (experiments/chapter2/faces_base.yaml); a missing one is
    a MissingConfigKey naming it."""
    return FaceTaskLoss(SfSWeights(**{term: float(require(cfg, f"sfs_weights.{term}", FACES_BASE))
                                      for term in TERMS}))


# ------------------------------------------------------------------------------------------------- display
def to_display(image: Tensor) -> Tensor:
    """Face images are already [0, 1]; G's linear output is clipped for display."""
    return image.detach().float().clamp(0.0, 1.0).cpu()


def decompose(predictions: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """SfSNet output -> unit normals, albedo, shading, reconstruction (the Fig 2.7 quantities)."""
    shading, reconstruction = render(predictions["normal"], predictions["albedo"], predictions["lighting"])
    return {"normals": decode_normals(predictions["normal"]), "albedo": predictions["albedo"],
            "shading": shading, "reconstruction": reconstruction}


def prediction_panels(predictions: Mapping[str, Tensor], batch: Mapping, domain: str) -> dict[str, Tensor]:
    """Fig 2.7 panels: normals, albedo, shading, reconstruction, and the labels they are trained against."""
    parts = decompose(predictions)
    panels = {
        "normals": normals_to_rgb(parts["normals"]),
        "albedo": to_display(parts["albedo"]),
        "shading": to_display(parts["shading"]),
        "reconstruction": to_display(parts["reconstruction"]),
    }
    label = "ground_truth" if domain == "synthetic" else "pseudo_label"
    if "normal" in batch and batch["normal"].dim() == 4:
        mask = batch.get("mask")
        panels[f"{label}_normals"] = normals_to_rgb(decode_normals(batch["normal"]), mask)
    if "albedo" in batch:
        panels[f"{label}_albedo"] = to_display(batch["albedo"])
    return panels


# ------------------------------------------------------------------------------------------------ evaluate
@torch.no_grad()
def evaluate_photoface(generator: nn.Module | None, task_network: nn.Module, dataset: Dataset,
                       batch_size: int = 20, device: str = "cpu") -> dict[str, float]:
    """Table 2.3 protocol (docs/protocols.md §3): MAE = mean of batch means (batch 20), thresholds
    pooled over all masked pixels, via `common.metrics.normals.PhotofaceAggregator`."""
    aggregator = PhotofaceAggregator()
    for batch in tqdm(DataLoader(dataset, batch_size=batch_size, shuffle=False), desc="Photoface", unit="batch"):
        _, prediction = shared_and_predict(generator, task_network, batch["image"].to(device))
        aggregator.add(decode_normals(prediction["normal"]).cpu(), batch["normal"], batch["mask"])
    return aggregator.compute()


@torch.no_grad()
def evaluate_multipie(generator: nn.Module | None, task_network: nn.Module, dataset, batch_size: int = 32,
                      device: str = "cpu", sphere_size: int = 32) -> dict[str, float]:
    """Table 2.4 protocol (docs/chapter2-faces.md; `sharingan.data.multipie`): leave-one-subject-out
    nearest-prototype lighting classification, top-1/2/3 accuracy in %."""
    lighting, labels, subjects = [], [], []
    for batch in tqdm(DataLoader(dataset, batch_size=batch_size, shuffle=False), desc="Multi-PIE", unit="batch"):
        _, prediction = shared_and_predict(generator, task_network, batch["image"].to(device))
        lighting.append(prediction["lighting"].double().cpu().numpy())
        labels += [int(v) for v in batch["label"]]
        subjects += [int(v) for v in batch["subject"]]
    class_count = len(dataset.shots)
    scores = lighting_class_scores(np.concatenate(lighting), labels, subjects, class_count, sphere_size)
    result = {f"top{k}": topk_accuracy(scores, labels, k) for k in (1, 2, 3) if k <= class_count}
    result["image_count"] = len(labels)
    result["class_count"], result["subject_count"] = class_count, len(set(subjects))
    return result


def method_name(networks: Mapping[str, nn.Module | None]) -> str:
    return "SharinGAN (ours)" if networks.get("generator") is not None else "SfSNet, no SharinGAN (ours)"


def evaluate(cfg: DictConfig, networks: Mapping[str, nn.Module | None], out_dir: str | Path) -> dict:
    """Photoface test (Table 2.3) and/or Multi-PIE lighting (Table 2.4), whichever data roots are set."""
    out_dir = Path(out_dir)
    device = "cuda" if torch.cuda.is_available() and cfg.eval.get("device", "auto") != "cpu" else "cpu"
    generator, task_network = networks.get("generator"), networks["task_network"]
    for module in (generator, task_network):
        if module is not None:
            module.to(device).eval()
    results: dict[str, Any] = {}
    if cfg.data.get("photoface_root"):
        dataset = photoface_data(cfg, str(cfg.eval.photoface_split))
        results["photoface"] = {
            "metrics": evaluate_photoface(generator, task_network, dataset, int(cfg.eval.batch_size), device),
            "protocol": {"split": str(cfg.eval.photoface_split), "image_count": len(dataset), "mask_threshold": 0.9,
                         "mae": "mean of per-batch masked means", "batch_size": int(cfg.eval.batch_size)}}
    if cfg.data.get("multipie_root"):
        node = cfg.eval.multipie
        metrics = evaluate_multipie(generator, task_network, multipie_data(cfg), int(cfg.eval.batch_size), device)
        results["multipie"] = {
            "metrics": {key: metrics[key] for key in ("top1", "top2", "top3", "image_count") if key in metrics},
            "protocol": {"camera": str(node.camera), "recordings": [list(r) for r in node.recordings],
                         "shots": list(node.shots), "classes": metrics["class_count"],
                         "subjects": metrics["subject_count"], "crop": f"centre {int(node.crop_size)} -> "
                         f"{image_size(cfg)}", "classifier": "leave-one-subject-out nearest class mean, cosine of "
                         "grey-SH hemisphere shading"}}
    if not results:
        raise ValueError("nothing to evaluate: set data.photoface_root (Table 2.3) and/or data.multipie_root "
                         "(Table 2.4)")
    write_json(out_dir / "metrics.json", results)
    write_tables(cfg, {str(cfg.eval.get("row_name") or method_name(networks)): results}, out_dir)
    return results


def load_paper_tables() -> DictConfig:
    if not PAPER_TABLES.is_file():
        raise FileNotFoundError(f"paper numbers missing: {PAPER_TABLES}")
    return OmegaConf.load(PAPER_TABLES)


def write_tables(cfg: DictConfig, results: Mapping[str, Mapping], out_dir: str | Path) -> list[Path]:
    """Tables 2.3 (Photoface) and 2.4 (Multi-PIE) with our rows beside the paper's; only tables we have rows for.

    `results` maps a row name to an `evaluate` result {benchmark: {"metrics": ..., "protocol": ...}}
    (a metric may be {"mean", "std", "n"} over seeds).
    """
    paper = load_paper_tables()
    out_dir = Path(out_dir)
    written = []
    for key, table in (("photoface", paper.table_2_3), ("multipie", paper.table_2_4)):
        rows, protocol = [], None
        for method, result in results.items():
            if key in result:
                rows.append({"method": method, **{c: result[key]["metrics"].get(c) for c in table.columns}})
                protocol = result[key]["protocol"]
        if not rows:
            continue
        paper_rows = [OmegaConf.to_container(row) for row in table.rows]
        written.append(write_results_table(out_dir / str(table.file), str(table.title), rows, list(table.columns),
                                           paper_rows, protocol, notes=str(table.get("notes", "")), digits=2))
    return written


# ------------------------------------------------------------------------------------------------- predict
def _read_square(path: Path, size: int) -> Tensor:
    """Centre square of a user image as (1, 3, size, size) in [0, 1]; greyscale, RGBA and 16-bit files are
    converted to 8-bit RGB with a printed note, a corrupt or truncated file is an error naming it."""
    image, note = load_image_rgb(path)
    if note:
        tqdm.write(f"note: {note}")
    image = image.astype(np.float32) / 255.0
    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = cv2.resize(image[top:top + side, left:left + side], (size, size), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(square).permute(2, 0, 1)[None]


@torch.no_grad()
def predict(cfg: DictConfig, networks: Mapping[str, nn.Module | None], inputs: Sequence[Path],
            out_dir: str | Path) -> list[Path]:
    """Per image (centre square, resized to data.size): normals, albedo, shading, reconstruction and the
    shared image as PNGs, plus the 27 lighting coefficients as text."""
    out_dir = Path(out_dir)
    generator, task_network = networks.get("generator"), networks["task_network"]
    for module in (generator, task_network):
        if module is not None:
            module.eval()
    written = []
    for path in tqdm([Path(p) for p in inputs], desc="predict", unit="image"):
        image = _read_square(path, image_size(cfg))
        shared, prediction = shared_and_predict(generator, task_network, image)
        parts = decompose(prediction)
        outputs = {
            "normals": normals_to_rgb(parts["normals"])[0],
            "albedo": to_display(parts["albedo"])[0],
            "shading": to_display(parts["shading"])[0],
            "reconstruction": to_display(parts["reconstruction"])[0],
            "shared": to_display(shared)[0],
        }
        for name, picture in outputs.items():
            written.append(save_png(out_dir / f"{path.stem}_{name}.png", picture.permute(1, 2, 0).numpy()))
        lighting_path = out_dir / f"{path.stem}_lighting.txt"
        write_light(lighting_path, prediction["lighting"][0].double().numpy())
        written.append(lighting_path)
    return written


# ---------------------------------------------------------------------------------------------- verify data
def verify_data(cfg: DictConfig, stages: Sequence[str]) -> dict:
    """Open every dataset the stages need (errors name the missing path); return sample counts."""
    summary: dict[str, int] = {}
    stages = set(stages)
    if stages & {"pretrain_generator", "pretrain_task", "train"}:
        summary["synthetic_train"] = len(synthetic_data(cfg, "train"))
    if "pretrain_generator" in stages:
        summary["celeba_train"] = len(celeba_images(cfg, "train"))
    if "train" in stages:
        if str(cfg.data.get("celeba_labels")) == "auto":
            summary["celeba_train"] = len(celeba_images(cfg, "train"))  # labelled after pretrain_task
        else:
            summary["celeba_pseudo_labelled"] = len(celeba_pseudo_labelled(cfg, "train"))
    evaluating = bool(stages & {"eval", "evaluate"})
    if evaluating or "train" in stages:
        if cfg.data.get("photoface_root"):
            summary["photoface_test"] = len(photoface_data(cfg, str(cfg.eval.photoface_split)))
            summary["photoface_val"] = len(photoface_data(cfg, "val"))
        if evaluating and cfg.data.get("multipie_root"):
            summary["multipie"] = len(multipie_data(cfg))
    return summary
