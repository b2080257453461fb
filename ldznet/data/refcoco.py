"""RefCOCO, RefCOCO+ and G-Ref (refer API files) for zero-shot evaluation, dissertation §3.4.3, Table 3.3.

On-disk layout (docs/formats.md §11), ``root`` = the refer ``data`` folder::

    root/refcoco/{instances.json, refs(unc).p}      root/refcoco+/{instances.json, refs(unc).p}
    root/refcocog/{instances.json, refs(umd).p}     root/images/mscoco/images/train2014/COCO_train2014_*.jpg

``refs(<partition>).p`` is a Python-2 pickle (list of refs: ref_id, ann_id, image_id, category_id, split,
sent_ids, sentences[{sent, raw, tokens, sent_id}]) read with the restricted unpickler of
:mod:`ldznet.data.safe_pickle`. ``instances.json`` is COCO-style (images, annotations, categories); the
mask of a ref is its annotation's segmentation (polygons, or RLE), parts unioned (refer ``getMask``).
Partitions as in the dissertation: UNC for RefCOCO/RefCOCO+, UMD for G-Ref. Split selection follows
refer's ``getRefIds``: ``train``/``val`` exact, ``testA``/``testB`` by letter, ``test`` = every test split.
One sample per (ref, sentence); the image is squashed to ``image_size`` x ``image_size`` with its mask.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from common.checkpoints import atomic_write, write_json
from common.images import read_rgb
from ldznet.data.coco_masks import encode_rle, segmentation_to_mask
from ldznet.data.phrasecut import DEFAULT_EVAL_TEMPLATE, apply_prompt
from ldznet.data.safe_pickle import safe_dumps, safe_load
from ldznet.data.transforms import check_same_size, image_to_tensor, mask_to_tensor, write_image

log = logging.getLogger(__name__)

DATASETS = ("refcoco", "refcoco+", "refcocog")
DEFAULT_PARTITION = {"refcoco": "unc", "refcoco+": "unc", "refcocog": "umd"}
VALID_PARTITIONS = {"refcoco": ("unc", "google"), "refcoco+": ("unc",), "refcocog": ("umd", "google")}
IMAGES_SUBDIR = Path("images/mscoco/images/train2014")
_REF_KEYS = ("ref_id", "ann_id", "image_id", "split", "sentences")


def refs_path(root: str | Path, dataset: str, split_by: str) -> Path:
    return Path(root) / dataset / f"refs({split_by}).p"


def select_split(refs: Sequence[dict], split: str) -> list[dict]:
    """refer ``getRefIds(split=...)``: exact for train/val, by letter for testA/B/C, any test* for test."""
    if split in ("train", "val"):
        return [r for r in refs if r["split"] == split]
    if split in ("testA", "testB", "testC"):
        return [r for r in refs if str(r["split"]).startswith("test") and split[-1] in str(r["split"])[4:]]
    if split == "test":
        return [r for r in refs if "test" in str(r["split"])]
    raise ValueError(f"unknown refer split {split!r}; use train, val, test, testA, testB or testC")


def load_refs(root: str | Path, dataset: str, split_by: str) -> list[dict]:
    """The checked refs of ``refs(<split_by>).p`` (restricted unpickler: a malicious file runs nothing)."""
    path = refs_path(root, dataset, split_by)
    refs = safe_load(path)
    if not isinstance(refs, list):
        raise ValueError(f"{path}: expected a list of refs, got {type(refs).__name__}")
    for k, ref in enumerate(refs):
        if not isinstance(ref, dict):
            raise ValueError(f"{path}: ref {k} is not a dict")
        missing = [key for key in _REF_KEYS if key not in ref]
        if missing:
            raise ValueError(f"{path}: ref {k} (ref_id {ref.get('ref_id', '?')}) lacks keys {missing}")
    return refs


def load_instances(path: str | Path) -> tuple[dict[int, dict], dict[int, dict]]:
    """``instances.json`` -> ({image id: image}, {annotation id: annotation})."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"refer instances file not found: {path}")
    try:
        with open(path, encoding="utf-8") as file:
            data = json.load(file)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or not all(
        isinstance(data.get(k), list) for k in ("images", "annotations")
    ):
        raise ValueError(f"{path}: expected a COCO dict with 'images' and 'annotations' lists")
    for group, keys in (
        ("images", ("id", "file_name", "height", "width")),
        ("annotations", ("id", "segmentation")),
    ):
        for k, entry in enumerate(data[group]):
            missing = [key for key in keys if not isinstance(entry, dict) or key not in entry]
            if missing:
                raise ValueError(f"{path}: {group}[{k}] lacks keys {missing}")
    images = {int(im["id"]): im for im in data["images"]}
    annotations = {int(a["id"]): a for a in data["annotations"]}
    return images, annotations


class RefCOCODataset(Dataset):
    """RefCOCO-family samples as ``{"image", "mask", "prompt", "sample_index", "image_id"}``.

    Args:
        root: the refer data folder (holds ``refcoco/``, ``refcoco+/``, ``refcocog/`` and ``images/``).
        split: ``val``, ``test``, ``testA``, ``testB`` (RefCOCO/+), ``train``.
        image_size: model input side (384); image and mask are squashed to it.
        dataset: ``refcoco``, ``refcoco+`` or ``refcocog``.
        split_by: partition; default UNC for RefCOCO/RefCOCO+ and UMD for G-Ref (dissertation §3.4.3).
        text_key: ``sent`` (refer's cleaned lower-case sentence) or ``raw`` (as typed by the annotator).
        prompt_mode: ``raw`` sentence or a fixed ``template`` around it.
        template: the fixed template for ``prompt_mode="template"``.
        images_dir: COCO train2014 folder, default ``root/images/mscoco/images/train2014``.
        limit: keep only the first ``limit`` samples.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "val",
        image_size: int = 384,
        dataset: str = "refcoco",
        split_by: str | None = None,
        text_key: str = "sent",
        prompt_mode: str = "raw",
        template: str = DEFAULT_EVAL_TEMPLATE,
        images_dir: str | Path | None = None,
        limit: int | None = None,
    ):
        if dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
        split_by = split_by or DEFAULT_PARTITION[dataset]
        if split_by not in VALID_PARTITIONS[dataset]:
            raise ValueError(f"{dataset} has partitions {VALID_PARTITIONS[dataset]}, got {split_by!r}")
        if text_key not in ("sent", "raw"):
            raise ValueError(f"text_key must be 'sent' or 'raw', got {text_key!r}")
        if prompt_mode not in ("raw", "template"):
            raise ValueError(f"prompt_mode must be 'raw' or 'template', got {prompt_mode!r}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"refer data root not found: {self.root} (set LDZNET_REFER_ROOT or pass the "
                "folder holding refcoco/, refcoco+/, refcocog/ and images/)"
            )
        self.dataset, self.split_by, self.split = dataset, split_by, split
        self.image_size, self.prompt_mode, self.template = int(image_size), prompt_mode, template
        self.images_dir = Path(images_dir) if images_dir is not None else self.root / IMAGES_SUBDIR
        source = refs_path(self.root, dataset, split_by)
        refs = select_split(load_refs(self.root, dataset, split_by), split)
        instances_path = self.root / dataset / "instances.json"
        self.images, self.annotations = load_instances(instances_path)
        self.samples: list[dict] = []
        for ref in refs:
            ref_id = ref["ref_id"]
            if int(ref["ann_id"]) not in self.annotations:
                raise ValueError(
                    f"{source}: ref {ref_id} points to annotation {ref['ann_id']}, "
                    f"absent from {instances_path}"
                )
            if int(ref["image_id"]) not in self.images:
                raise ValueError(
                    f"{source}: ref {ref_id} points to image {ref['image_id']}, absent from {instances_path}"
                )
            for k, sentence in enumerate(ref["sentences"]):
                if not isinstance(sentence, dict) or text_key not in sentence:
                    raise ValueError(f"{source}: ref {ref_id} sentence {k} lacks '{text_key}'")
                text = str(sentence[text_key]).strip()
                if not text:
                    raise ValueError(
                        f"{source}: ref {ref_id} sentence {k} (sent_id "
                        f"{sentence.get('sent_id', '?')}) is empty"
                    )
                self.samples.append(
                    {
                        "ref_id": ref_id,
                        "ann_id": int(ref["ann_id"]),
                        "image_id": int(ref["image_id"]),
                        "text": text,
                    }
                )
        if limit is not None:
            self.samples = self.samples[: int(limit)]

    def __len__(self) -> int:
        return len(self.samples)

    def load_mask(self, index: int) -> np.ndarray:
        """Full-resolution (H, W) uint8 mask of sample ``index`` (union of the annotation's parts)."""
        sample = self.samples[index]
        info = self.images[sample["image_id"]]
        annotation = self.annotations[sample["ann_id"]]
        where = f"{self.root / self.dataset / 'instances.json'} annotation {sample['ann_id']} segmentation"
        return segmentation_to_mask(
            annotation["segmentation"], int(info["height"]), int(info["width"]), where
        )

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[index]
        info = self.images[sample["image_id"]]
        path = self.images_dir / info["file_name"]
        image = read_rgb(path, log=log)
        if image.shape[:2] != (int(info["height"]), int(info["width"])):
            raise ValueError(
                f"{path}: image is {image.shape[0]}x{image.shape[1]} (HxW) but instances.json says "
                f"{info['height']}x{info['width']}"
            )
        mask = self.load_mask(index)
        check_same_size(image, mask, f"ref {sample['ref_id']}")
        size = (self.image_size, self.image_size)
        return {
            "image": image_to_tensor(image, size),
            "mask": mask_to_tensor(mask, size),
            "prompt": apply_prompt(sample["text"], self.prompt_mode, self.template),
            "sample_index": index,
            "image_id": str(sample["image_id"]),
        }


# ----------------------------------------------------------------------------------------------------
# Fixture writers in the real formats (tests, miniature demo world).


def coco_file_name(image_id: int) -> str:
    return f"COCO_train2014_{int(image_id):012d}.jpg"


def write_refs_pickle(path: str | Path, refs: Sequence[dict]) -> Path:
    """Write ``refs(<partition>).p`` as refer does: a pickled list of ref dicts, protocol 2."""
    path = Path(path)
    data = safe_dumps([dict(r) for r in refs], protocol=2)
    with atomic_write(path, "wb") as file:
        file.write(data)
    return path


def write_instances_json(
    path: str | Path,
    images: Sequence[dict],
    annotations: Sequence[dict],
    categories: Sequence[dict] = ({"supercategory": "object", "id": 1, "name": "object"},),
) -> Path:
    """Write a COCO-style ``instances.json`` (images, annotations, categories)."""
    write_json(
        path, {"images": list(images), "annotations": list(annotations), "categories": list(categories)}
    )
    return Path(path)


def make_ref(
    ref_id: int,
    ann_id: int,
    image_id: int,
    split: str,
    sentences: Sequence[str],
    category_id: int = 1,
    first_sent_id: int | None = None,
) -> dict:
    """One ref dict with refer's keys (``sent`` = lower-cased raw text without punctuation)."""
    first = first_sent_id if first_sent_id is not None else int(ref_id) * 10
    sents = []
    for k, raw in enumerate(sentences):
        clean = "".join(ch for ch in raw.lower() if ch.isalnum() or ch.isspace())
        sents.append(
            {"tokens": clean.split(), "raw": raw, "sent_id": first + k, "sent": " ".join(clean.split())}
        )
    return {
        "image_id": int(image_id),
        "split": split,
        "sentences": sents,
        "file_name": f"COCO_train2014_{int(image_id):012d}_{int(ann_id)}.jpg",
        "category_id": int(category_id),
        "ann_id": int(ann_id),
        "sent_ids": [s["sent_id"] for s in sents],
        "ref_id": int(ref_id),
    }


def write_refer_dataset(
    root: str | Path, dataset: str, samples: Sequence[dict], split_by: str | None = None
) -> Path:
    """Write a tiny refer dataset (refs pickle, instances.json, COCO images) under ``root``; returns ``root``.

    ``samples``: ``[{"image_id": int, "image": HxWx3 uint8, "objects": [{"ann_id": int, "split": str,
    "sentences": [str, ...], "segmentation": polygons list | RLE dict | None, "mask": HxW array (used
    when segmentation is None; stored as compressed RLE), optional "iscrowd", "category_id"}]}]``.
    """
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
    root = Path(root)
    split_by = split_by or DEFAULT_PARTITION[dataset]
    images, annotations, refs = [], [], []
    ref_id = 1
    for sample in samples:
        image_id = int(sample["image_id"])
        height, width = sample["image"].shape[:2]
        write_image(root / IMAGES_SUBDIR / coco_file_name(image_id), sample["image"])
        images.append(
            {
                "license": 1,
                "file_name": coco_file_name(image_id),
                "coco_url": f"http://mscoco.org/images/{image_id}",
                "height": int(height),
                "width": int(width),
                "date_captured": "2013-11-19 20:56:23",
                "id": image_id,
            }
        )
        for obj in sample["objects"]:
            segmentation = obj.get("segmentation")
            if segmentation is None:
                segmentation = encode_rle(np.asarray(obj["mask"]))
            mask = segmentation_to_mask(segmentation, height, width, f"object {obj['ann_id']}")
            ys, xs = np.nonzero(mask)
            bbox = (
                [
                    float(xs.min()),
                    float(ys.min()),
                    float(xs.max() - xs.min() + 1),
                    float(ys.max() - ys.min() + 1),
                ]
                if xs.size
                else [0.0, 0.0, 0.0, 0.0]
            )
            category_id = int(obj.get("category_id", 1))
            annotations.append(
                {
                    "segmentation": segmentation,
                    "area": float(mask.sum()),
                    "iscrowd": int(obj.get("iscrowd", 0)),
                    "image_id": image_id,
                    "bbox": bbox,
                    "category_id": category_id,
                    "id": int(obj["ann_id"]),
                }
            )
            refs.append(
                make_ref(ref_id, int(obj["ann_id"]), image_id, obj["split"], obj["sentences"], category_id)
            )
            ref_id += 1
    write_instances_json(root / dataset / "instances.json", images, annotations)
    write_refs_pickle(refs_path(root, dataset, split_by), refs)
    return root
