"""Sanity floors of the miniature's tables, and every row's per-image values (stages floors_*).

A floor is a trivial predictor scored by the chapter's *own* evaluation function, the one that scores the
trained rows (`sharingan.tasks.<task>.evaluate`, `ldznet.eval.evaluate_segmenter`):

- depth: the per-pixel mean of the synthetic (vKITTI-layout) training depth labels at the network size,
  predicted for every image (`ConstantDepthNetwork`);
- faces: the constant frontal normal (0, 0, 1) and the mean lighting of the synthetic training faces
  (`ConstantFaceNetwork`; a constant lighting makes every Multi-PIE class score tie: chance level);
- segmentation: all-foreground (`AllForeground`), and an image-only predictor: the same segmentation model
  class (`floors.image_only_variant`, RGBNet by default, the cheapest) trained by `ldznet.train` with the same
  settings on the same PhraseCut images and masks, every phrase replaced by one fixed word, and evaluated
  with that word in place of every prompt (`PromptBlind`). It shows what the image alone gives.

A trained model that does not beat its floor has learnt nothing the report can compare (demo/verdicts.py).
The same stages also write every row's per-image values (demo/per_image.py) for the bootstrap.
"""

from __future__ import annotations

import gc
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from common.config import load_config
from demo.data_overrides import (
    continue_chapter3_part,
    depth_data_overrides,
    evaluated_checkpoint,
    faces_data_overrides,
    ldznet_seed_config,
)
from demo.per_image import (
    depth_per_image,
    faces_per_image,
    per_image_key,
    save_per_image,
    segmentation_curves,
)
from demo.stages import StageContext, seed_of

# Chapter code (sharingan.*, ldznet.*) is imported inside the stage functions: demo.plan imports this module for
# `python -m demo --list` and for every worker process, which must not need the chapters (a missing one is reported
# "not run: missing chapter code"); sharingan.tasks.* / ldznet.pipeline cost ~3.7 / ~4.4 s to import (measured).

DEPTH_FLOOR = "Floor: per-pixel mean training depth"
FACES_FLOOR = "Floor: frontal normal, mean training lighting"
ALL_FOREGROUND = "Floor: all foreground"
IMAGE_ONLY = "Floor: image only (prompt ignored)"
BLIND_PHRASE = "object"


# ------------------------------------------------------------------------------------------------ models

class ConstantDepthNetwork(nn.Module):
    """A "task network" whose finest output is a fixed map in the network's [-1, 1] depth units."""

    def __init__(self, mean_map: Tensor) -> None:
        super().__init__()
        self.register_buffer("mean_map", mean_map.reshape(1, 1, *mean_map.shape[-2:]).float())

    def forward(self, image: Tensor) -> list[Tensor]:
        if image.shape[-2:] != self.mean_map.shape[-2:]:
            raise ValueError(f"floor map is {tuple(self.mean_map.shape[-2:])}, input {tuple(image.shape[-2:])}")
        return [self.mean_map.expand(image.shape[0], 1, *image.shape[-2:])]


class ConstantFaceNetwork(nn.Module):
    """An "SfSNet" predicting the frontal normal (0, 0, 1), grey albedo and one fixed lighting for every face."""

    def __init__(self, lighting: Tensor) -> None:
        super().__init__()
        self.register_buffer("lighting", lighting.reshape(1, -1).float())

    def forward(self, image: Tensor) -> dict[str, Tensor]:
        batch, _, height, width = image.shape
        frontal = torch.tensor([0.5, 0.5, 1.0]).view(1, 3, 1, 1)  # (n + 1) / 2 of n = (0, 0, 1)
        return {"normal": frontal.expand(batch, 3, height, width).clone(),
                "albedo": torch.full((batch, 3, height, width), 0.5),
                "lighting": self.lighting.expand(batch, -1).clone()}


class AllForeground(nn.Module):
    """Every pixel foreground for every prompt (logit 30: probability 1 at every threshold)."""

    def forward(self, images: Tensor, prompts: Sequence[str]) -> Tensor:
        return torch.full((images.shape[0], 1, *images.shape[-2:]), 30.0)


class PromptBlind(nn.Module):
    """A segmenter trained with one fixed phrase, given that phrase whatever the prompt."""

    def __init__(self, model: nn.Module, phrase: str = BLIND_PHRASE) -> None:
        super().__init__()
        self.model, self.phrase = model, phrase

    def forward(self, images: Tensor, prompts: Sequence[str]) -> Tensor:
        return self.model(images, [self.phrase] * len(prompts))


# ------------------------------------------------------------------------------------------- statistics

def mean_training_depth(cfg) -> Tensor:
    """Per-pixel mean of the synthetic training depth labels (network units), no augmentation."""
    from sharingan.tasks.depth import synthetic_dataset

    dataset = synthetic_dataset(cfg, augment=False, rotation=False)
    total = None
    for index in range(len(dataset)):
        depth = dataset[index]["depth"].double()
        total = depth if total is None else total + depth
    if total is None:
        raise ValueError("the synthetic depth training set is empty")
    return (total / len(dataset)).float()


def mean_training_lighting(cfg) -> Tensor:
    """Mean 27-d SH lighting of the synthetic training faces."""
    from sharingan.tasks.normals import synthetic_data

    dataset = synthetic_data(cfg, "train")
    lights = [torch.as_tensor(dataset[i]["lighting"]).double().flatten() for i in range(len(dataset))]
    if not lights:
        raise ValueError("the synthetic face training set is empty")
    return torch.stack(lights).mean(0).float()


def write_prompt_blind_phrasecut(source: Path, target: Path, phrase: str = BLIND_PHRASE,
                                 splits: Sequence[str] = ("train", "val")) -> Path:
    """A PhraseCut root with the same images and polygons whose every phrase is `phrase` (images linked)."""
    target.mkdir(parents=True, exist_ok=True)
    for name in ("images", "image_data_split.json", "name_att_rel_count.json"):
        link = target / name
        if (source / name).exists() and not link.exists():
            os.symlink((source / name).resolve(), link)
    for split in splits:
        tasks = json.loads((source / f"refer_{split}.json").read_text())
        for task in tasks:
            task["phrase"] = phrase
        temporary = target / f".refer_{split}.json.tmp"
        temporary.write_text(json.dumps(tasks))
        os.replace(temporary, target / f"refer_{split}.json")
    return target


# ------------------------------------------------------------------------------------------------ stages

def _agreement(table: dict, values: dict[str, np.ndarray], benchmark: str) -> dict[str, float]:
    metrics = table[benchmark]["metrics"]
    return {metric: {"table": float(metrics[metric]), "per_image_mean": float(np.nanmean(array))}
            for metric, array in values.items() if metric in metrics}


def _chapter2_floor(ctx: StageContext, task_name: str, world_stage: str, stage: str, data_overrides, row: str,
                    floor_networks, per_image) -> dict:
    from sharingan.checkpoints import load_networks
    from sharingan.tasks import load_task

    c = ctx.config
    world = ctx.path_of(world_stage)
    cfg = load_config(c["config"], list(c["overrides"]) + data_overrides(world) + [f"seed={c['seeds'][0]}"])
    cfg.eval.row_name = row
    task = load_task(task_name)
    networks = floor_networks(cfg)
    floor = task.evaluate(cfg, networks, ctx.out_dir / "floor")
    arrays, agreement = {}, {}
    for benchmark, values in per_image(cfg, networks).items():
        agreement[per_image_key(row, None, benchmark, "")] = _agreement(floor, values, benchmark)
        arrays.update({per_image_key(row, None, benchmark, m): v for m, v in values.items()})
    chapter = ctx.results[stage]
    for seed, entry in chapter.get("seeds", {}).items():
        for name, checkpoint in entry.get("checkpoints", {}).items():
            if not checkpoint:
                continue
            trained, _, _ = load_networks(checkpoint, task_name)
            table = entry.get("rows", {}).get(name, {})
            for benchmark, values in per_image(cfg, trained).items():
                arrays.update({per_image_key(name, seed, benchmark, m): v for m, v in values.items()})
                if benchmark in table:
                    agreement[per_image_key(name, seed, benchmark, "")] = _agreement(table, values, benchmark)
    path = save_per_image(ctx.out_dir / "per_image.npz", arrays)
    return {"floors": {row: floor}, "per_image": str(path), "agreement": agreement}


def depth_floor_networks(cfg) -> dict[str, nn.Module | None]:
    """The depth table's floor as "networks" for the chapter's evaluate: no G, T = the per-pixel mean map."""
    from sharingan.tasks.depth import vkitti_entries

    print(f"[floors] mean depth over {len(vkitti_entries(cfg))} synthetic training labels")
    return {"generator": None, "task_network": ConstantDepthNetwork(mean_training_depth(cfg))}


def faces_floor_networks(cfg) -> dict[str, nn.Module | None]:
    """The face tables' floor: no G, T = frontal normal with the mean training lighting."""
    return {"generator": None, "task_network": ConstantFaceNetwork(mean_training_lighting(cfg))}


def run_floors_depth(ctx: StageContext) -> dict:
    return _chapter2_floor(ctx, "depth", "world_street", "depth", depth_data_overrides, DEPTH_FLOOR,
                           depth_floor_networks, depth_per_image)


def run_floors_faces(ctx: StageContext) -> dict:
    return _chapter2_floor(ctx, "normals", "world_faces", "faces", faces_data_overrides, FACES_FLOOR,
                           faces_floor_networks, faces_per_image)


def fit_image_only(ctx: StageContext, part: str, folder: Path) -> dict:
    """The image-only floor for one training seed (stage `floor_image_only`, part ``seed<N>``): the
    `image_only_variant` class trained by `ldznet.train` with the same settings on the same PhraseCut images
    and masks, every phrase replaced by one fixed phrase (the prompt carries no information)."""
    from ldznet.pipeline import variant_config
    from ldznet.train import train

    world = ctx.path_of("world_shapes")
    variant = str(ctx.config["image_only_variant"])
    blind = write_prompt_blind_phrasecut(world / "phrasecut", folder / "phrasecut_prompt_blind")
    cfg = variant_config(ldznet_seed_config(ctx, seed_of(part), folder), variant)
    cfg.experiment = f"{variant}_image_only"
    cfg.data.train.root = str(blind)
    cfg.data.val.root = str(blind)
    continue_chapter3_part(ctx, "floor_image_only", part, cfg)
    run_dir = train(cfg, root=str(folder / "runs"))
    return {"run_dir": str(run_dir), "segmenter": str(run_dir / "segmenter.pt")}


def run_floors_segmentation(ctx: StageContext) -> dict:
    """All-foreground and image-only floors on every evaluation set, and every row's per-sample IoU curves."""
    from ldznet.checkpoints import load_segmenter
    from ldznet.data import build_dataset
    from ldznet.eval import evaluate_segmenter
    from ldznet.pipeline import METHOD_NAMES, evaluation_nodes

    c = ctx.config
    variant = str(c["image_only_variant"])
    image_only = dict(ctx.results["floor_image_only"]["seeds"])
    cfg = ldznet_seed_config(ctx, c["seeds"][0], ctx.out_dir)
    evaluation = cfg.pipeline.evaluation
    loaders = {}
    for name, node in evaluation_nodes(cfg).items():
        dataset = build_dataset(node, limit=evaluation.limit)
        batch_size = 1 if node.get("resize") == "keep_aspect" else int(evaluation.batch_size)
        loaders[name] = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    floors: dict = {name: {ALL_FOREGROUND: {}, IMAGE_ONLY: {}} for name in loaders}
    arrays, agreement = {}, {}
    for name, loader in loaders.items():
        floors[name][ALL_FOREGROUND]["-"] = evaluate_segmenter(AllForeground(), loader, progress=False)
        arrays[per_image_key(ALL_FOREGROUND, None, name, "iou_curves")] = segmentation_curves(AllForeground(), loader)
    for seed, run in image_only.items():  # each model is loaded once and scored on every evaluation set
        checkpoint = evaluated_checkpoint(run, c.get("chapter3_weights"))  # the trained rows': ldznet stage
        model = PromptBlind(load_segmenter(checkpoint, device="cpu", variant=variant, task=str(cfg.task)))
        for name, loader in loaders.items():
            floors[name][IMAGE_ONLY][seed] = evaluate_segmenter(model, loader, progress=False)
            arrays[per_image_key(IMAGE_ONLY, seed, name, "iou_curves")] = segmentation_curves(model, loader)
        del model
        gc.collect()
    for seed, entry in ctx.results["ldznet"].get("seeds", {}).items():
        for trained_variant, run in entry.get("runs", {}).items():
            method = METHOD_NAMES[trained_variant]
            model = load_segmenter(run["segmenter"], device="cpu", variant=trained_variant, task=str(cfg.task))
            for name, loader in loaders.items():
                curves = segmentation_curves(model, loader)
                arrays[per_image_key(method, seed, name, "iou_curves")] = curves
                table = entry.get("results", {}).get(name, {}).get("metrics", {}).get(method, {})
                if "miou_best" in table:
                    agreement[per_image_key(method, seed, name, "")] = {"miou_best": {
                        "table": float(table["miou_best"]),
                        "per_image_mean": 100.0 * float(np.max(curves.mean(axis=0)))}}
            del model
            gc.collect()
    path = save_per_image(ctx.out_dir / "per_image.npz", arrays)
    return {"floors": floors, "image_only": image_only, "image_only_variant": variant, "per_image": str(path),
            "agreement": agreement}
