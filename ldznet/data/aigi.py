"""AIGI: AI-generated images with text prompts and masks, dissertation §3.4.2 and Table 3.2.

The dataset (100 lexica.art images, 214 prompts) is published only as a Drive folder whose layout is not
documented (docs/ref-ldznet.md §5), so this module defines a layout of its own (our choice) and a converter.

Layout read by :class:`AIGIDataset` (``root``)::

    root/annotations.json       {"format": "aigi-v1",
                                 "samples": [{"image_id": "0007", "image": "images/0007.png",
                                              "mask": "masks/0007/00.png", "prompt": "Teddy Bear"}, ...]}
    root/images/<image_id>.<png|jpg>
    root/masks/<image_id>/<k>.png   one binary mask per prompt (0 = background, 255 = foreground), same
                                    size as its image; several regions of one prompt are in the same mask.

Converter source layout (``python -m ldznet.data.aigi convert --src SRC --dst ROOT``)::

    SRC/<image_id>/image.<png|jpg|jpeg|webp>
    SRC/<image_id>/<Prompt_Text>.png       the prompt is the file stem with "_" read as a space
    SRC/<image_id>/<Prompt_Text>__<n>.png  further regions of the same prompt (unioned)

A source mask pixel is foreground when its alpha is > 127 if the file has a non-opaque alpha channel,
otherwise when any colour channel is > 127. Evaluation (Table 3.2: mIoU, AP) resizes image and mask to
``image_size`` squared (``resize="square"``, the CLIPSeg protocol) or keeps the aspect ratio with an area
near ``image_size**2`` and both sides floored to a multiple of 64 (``resize="keep_aspect"``, the official
LD-ZNet demos; batch size 1 then).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset
from tqdm import tqdm

from common.checkpoints import write_json
from common.images import read_rgb
from ldznet.data.phrasecut import DEFAULT_EVAL_TEMPLATE, apply_prompt
from ldznet.data.transforms import check_same_size, image_to_tensor, mask_to_tensor, write_image

log = logging.getLogger(__name__)

FORMAT = "aigi-v1"
RESIZE_MODES = ("square", "keep_aspect")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def read_binary_mask(path: str | Path) -> np.ndarray:
    """A mask file as (H, W) uint8 {0, 1}: alpha > 127 if the alpha is not opaque, else any channel > 127."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"AIGI mask not found: {path}")
    try:
        with Image.open(path) as image:
            if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
                rgba = np.asarray(image.convert("RGBA"))
                if rgba[..., 3].min() < 255:
                    return (rgba[..., 3] > 127).astype(np.uint8)
                return (rgba[..., :3].max(axis=-1) > 127).astype(np.uint8)
            array = np.asarray(image.convert("RGB") if image.mode not in ("L", "1", "I", "I;16") else image)
    except OSError as exc:
        raise ValueError(f"cannot read AIGI mask {path}: {exc}") from exc
    if array.dtype == bool:
        return array.astype(np.uint8)
    if array.ndim == 3:
        array = array.max(axis=-1)
    return (array > 127).astype(np.uint8)


def keep_aspect_size(height: int, width: int, image_size: int = 384, multiple: int = 64) -> tuple[int, int]:
    """(h, w) with area close to ``image_size**2``, the aspect ratio kept, both floored to ``multiple``."""
    scale = image_size / math.sqrt(height * width)
    new_h = max(multiple, int(height * scale) // multiple * multiple)
    new_w = max(multiple, int(width * scale) // multiple * multiple)
    return new_h, new_w


def load_annotations(root: str | Path) -> list[dict]:
    """The checked sample list of ``root/annotations.json``."""
    path = Path(root) / "annotations.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"AIGI annotations not found: {path} (set LDZNET_AIGI_ROOT; the layout is in "
            "docs/chapter3-data.md)"
        )
    try:
        with open(path, encoding="utf-8") as file:
            data = json.load(file)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    if (
        not isinstance(data, dict)
        or data.get("format") != FORMAT
        or not isinstance(data.get("samples"), list)
    ):
        raise ValueError(f"{path}: expected {{'format': '{FORMAT}', 'samples': [...]}}")
    samples = data["samples"]
    for k, sample in enumerate(samples):
        if not isinstance(sample, dict):
            raise ValueError(f"{path}: samples[{k}] is not an object")
        missing = [key for key in ("image_id", "image", "mask", "prompt") if key not in sample]
        if missing:
            raise ValueError(f"{path}: samples[{k}] lacks keys {missing}")
        if not str(sample["prompt"]).strip():
            raise ValueError(
                f"{path}: samples[{k}] (image {sample['image_id']}, mask {sample['mask']}) "
                "has an empty prompt"
            )
    return samples


class AIGIDataset(Dataset):
    """AIGI samples as ``{"image", "mask", "prompt", "sample_index", "image_id"}``, one per (image, prompt).

    Args:
        root: folder with ``annotations.json`` (layout in the module docstring).
        split: AIGI is a single test set; ``"test"`` or ``"all"``.
        image_size: model input side (384), or the target area's side for ``resize="keep_aspect"``.
        prompt_mode: ``raw`` prompt text or a fixed ``template`` (the dissertation's captions are raw).
        template: the fixed template for ``prompt_mode="template"``.
        resize: ``square`` (squash to image_size^2) or ``keep_aspect`` (multiples of 64).
        limit: keep only the first ``limit`` samples.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "test",
        image_size: int = 384,
        prompt_mode: str = "raw",
        template: str = DEFAULT_EVAL_TEMPLATE,
        resize: str = "square",
        limit: int | None = None,
    ):
        self.root = Path(root)
        if split not in ("test", "all"):
            raise ValueError(f"AIGI has a single split: use 'test' (or 'all'), got {split!r}")
        if prompt_mode not in ("raw", "template"):
            raise ValueError(f"AIGI prompt_mode must be 'raw' or 'template', got {prompt_mode!r}")
        if resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {RESIZE_MODES}, got {resize!r}")
        self.split, self.image_size, self.prompt_mode = split, int(image_size), prompt_mode
        self.template, self.resize = template, resize
        self.samples = load_annotations(self.root)
        if limit is not None:
            self.samples = self.samples[: int(limit)]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[index]
        image = read_rgb(self.root / sample["image"], log=log)
        mask = read_binary_mask(self.root / sample["mask"])
        check_same_size(image, mask, f"AIGI sample {index} ({sample['image']} vs {sample['mask']})")
        if self.resize == "square":
            size = (self.image_size, self.image_size)
        else:
            size = keep_aspect_size(image.shape[0], image.shape[1], self.image_size)
        return {
            "image": image_to_tensor(image, size),
            "mask": mask_to_tensor(mask, size),
            "prompt": apply_prompt(str(sample["prompt"]).strip(), self.prompt_mode, self.template),
            "sample_index": index,
            "image_id": str(sample["image_id"]),
        }


# ----------------------------------------------------------------------------------------------------
# Writers (fixtures, demo world, converter) and the converter itself.


def write_aigi_sample(
    root: str | Path,
    image_id: str,
    image: np.ndarray,
    masks: Sequence[tuple[str, np.ndarray]],
    image_suffix: str = ".png",
) -> list[dict]:
    """Write one image and its (prompt, mask) pairs in the AIGI layout and append them to annotations.json."""
    root = Path(root)
    image_id = str(image_id)
    if not re.fullmatch(r"[A-Za-z0-9._-]+", image_id):
        raise ValueError(f"AIGI image_id must use letters, digits, '.', '_' or '-', got {image_id!r}")
    image = np.asarray(image)
    image_rel = f"images/{image_id}{image_suffix}"
    write_image(root / image_rel, image)
    entries = []
    for k, (prompt, mask) in enumerate(masks):
        mask = np.asarray(mask)
        check_same_size(image, mask, f"AIGI image {image_id} prompt {prompt!r}")
        if not str(prompt).strip():
            raise ValueError(f"AIGI image {image_id}: mask {k} has an empty prompt")
        mask_rel = f"masks/{image_id}/{k:02d}.png"
        write_image(root / mask_rel, ((mask > 0) * 255).astype(np.uint8))
        entries.append(
            {"image_id": image_id, "image": image_rel, "mask": mask_rel, "prompt": str(prompt).strip()}
        )
    path = root / "annotations.json"
    samples = load_annotations(root) if path.is_file() else []
    samples = [s for s in samples if s["image_id"] != image_id] + entries
    write_json(path, {"format": FORMAT, "samples": samples})
    return entries


def convert_source(src: str | Path, dst: str | Path) -> int:
    """Convert the simple source layout (module docstring) into the AIGI layout; returns the sample count."""
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise FileNotFoundError(f"AIGI source folder not found: {src}")
    folders = sorted(p for p in src.iterdir() if p.is_dir())
    if not folders:
        raise ValueError(
            f"{src}: no per-image folders (expected SRC/<image_id>/image.png + <Prompt>.png masks)"
        )
    total = 0
    for folder in tqdm(folders, desc="convert AIGI", unit="image"):
        images = [p for p in folder.iterdir() if p.stem == "image" and p.suffix.lower() in _IMAGE_SUFFIXES]
        if len(images) != 1:
            raise ValueError(f"{folder}: expected exactly one image.<png|jpg|jpeg|webp>, found {len(images)}")
        image = read_rgb(images[0], log=log)
        prompts: dict[str, np.ndarray] = {}
        for mask_path in sorted(
            p for p in folder.iterdir() if p.suffix.lower() == ".png" and p.stem != "image"
        ):
            prompt = re.sub(r"__\d+$", "", mask_path.stem).replace("_", " ").strip()
            if not prompt:
                raise ValueError(f"{mask_path}: the file name gives an empty prompt")
            mask = read_binary_mask(mask_path)
            check_same_size(image, mask, f"{mask_path} vs {images[0]}")
            prompts[prompt] = prompts[prompt] | mask if prompt in prompts else mask
        if not prompts:
            raise ValueError(f"{folder}: no <Prompt>.png mask next to {images[0].name}")
        total += len(write_aigi_sample(dst, folder.name, image, sorted(prompts.items())))
    return total


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ldznet.data.aigi", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    convert = sub.add_parser(
        "convert", help="convert SRC/<image_id>/{image.*, <Prompt>.png} into the AIGI layout"
    )
    convert.add_argument("--src", required=True, help="source folder with one sub-folder per image")
    convert.add_argument("--dst", required=True, help="output AIGI root (annotations.json, images/, masks/)")
    check = sub.add_parser("check", help="load every sample of an AIGI root and report counts")
    check.add_argument("--root", required=True)
    args = parser.parse_args(argv)
    if args.command == "convert":
        count = convert_source(args.src, args.dst)
        print(f"wrote {count} (image, prompt) samples to {args.dst}")
        return 0
    dataset = AIGIDataset(args.root, split="all")
    for index in range(len(dataset)):
        dataset[index]
    images = {s["image_id"] for s in dataset.samples}
    print(f"{args.root}: {len(dataset)} samples over {len(images)} images, all readable")
    return 0


if __name__ == "__main__":
    sys.exit(main())
