"""PhraseCut (VGPhraseCut_v0) for text-based segmentation, dissertation §3.3 and Table 3.1.

On-disk layout (docs/formats.md §10), ``root`` = the ``VGPhraseCut_v0`` folder::

    root/refer_{train,val,test,miniv}.json   list of tasks: task_id, image_id, ann_ids, instance_boxes,
                                             Polygons (instances -> polygons -> [x, y] pairs), phrase, ...
    root/image_data_split.json               list of {image_id, width, height, split, url, ...}
    root/images/<image_id>.jpg

One sample per task (image, phrase). The mask is the union of all polygons of all instances.

- Training (``crop=True, prompt_mode="random"``): the square crop of §3.3 (side min(H, W), keeping the
  object partly visible), resized to ``image_size``; the phrase goes through one of the 9 CLIPSeg prompt
  templates drawn at random; no negative samples.
- Evaluation (``crop=False``): the CLIPSeg protocol (docs/protocols.md §5): the full image squashed to
  ``image_size`` x ``image_size``, with the raw phrase (``prompt_mode="raw"``) or one fixed template
  (``prompt_mode="template"``, default ``"a photo of a {}."``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

from common.checkpoints import write_json
from common.images import read_rgb
from ldznet.data.transforms import (
    check_same_size,
    image_to_tensor,
    mask_to_tensor,
    random_square_crop,
    write_image,
    xy_polygons_to_mask,
)

log = logging.getLogger(__name__)

# The "shuffle+" prompt list of CLIPSeg that LD-ZNet samples from (docs/ref-ldznet.md §1.3).
PROMPT_TEMPLATES = (
    "a photo of a {}.",
    "a photograph of a {}.",
    "an image of a {}.",
    "{}.",
    "a cropped photo of a {}.",
    "a good photo of a {}.",
    "a photo of one {}.",
    "a bad photo of a {}.",
    "a photo of the {}.",
)
DEFAULT_EVAL_TEMPLATE = "a photo of a {}."
PROMPT_MODES = ("raw", "template", "random")
SPLITS = ("train", "val", "test", "miniv")

# Visual Genome images whose annotated size differs from the JPEG; CLIPSeg skips them (formats.md §10).
INVALID_IMAGE_IDS = frozenset(
    {
        150417,
        285665,
        498246,
        61564,
        285743,
        498269,
        498010,
        150516,
        150344,
        286093,
        61530,
        150333,
        286065,
        285814,
        498187,
        285761,
        498042,
    }
)


def apply_prompt(
    phrase: str, mode: str, template: str = DEFAULT_EVAL_TEMPLATE, generator: torch.Generator | None = None
) -> str:
    """Turn a phrase into the text prompt: raw, one fixed template, or a random CLIPSeg template."""
    if mode == "raw":
        return phrase
    if mode == "template":
        return template.format(phrase)
    if mode == "random":
        index = int(torch.randint(0, len(PROMPT_TEMPLATES), (1,), generator=generator))
        return PROMPT_TEMPLATES[index].format(phrase)
    raise ValueError(f"prompt_mode must be one of {PROMPT_MODES}, got {mode!r}")


def _read_json(path: Path, expected_type: type):
    if not path.is_file():
        raise FileNotFoundError(f"PhraseCut file not found: {path}")
    try:
        with open(path, encoding="utf-8") as file:
            value = json.load(file)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(value, expected_type):
        raise ValueError(f"{path}: top level must be a {expected_type.__name__}, got {type(value).__name__}")
    return value


def split_names(split: str) -> list[str]:
    """``"val_miniv"`` -> ``["val", "miniv"]`` (the PhraseCut toolkit convention); names are checked."""
    names = split.split("_")
    for name in names:
        if name not in SPLITS:
            raise ValueError(f"unknown PhraseCut split {name!r} in {split!r}; valid: {SPLITS} joined by '_'")
    return names


def load_image_info(root: str | Path) -> dict[int, dict]:
    """``image_data_split.json`` as {image_id: entry}; every entry needs image_id, width and height.

    The ``split`` field is not required: the split of a task is the ``refer_<split>.json`` it is in.
    """
    path = Path(root) / "image_data_split.json"
    info = {}
    for k, entry in enumerate(_read_json(path, list)):
        if not isinstance(entry, dict):
            raise ValueError(f"{path}: entry {k} is not an object")
        missing = [key for key in ("image_id", "width", "height") if key not in entry]
        if missing:
            raise ValueError(f"{path}: entry {k} lacks keys {missing}")
        info[int(entry["image_id"])] = entry
    return info


def load_tasks(root: str | Path, split: str) -> list[tuple[Path, dict]]:
    """All tasks of ``refer_<split>.json`` (several files for ``"val_miniv"``), as (file, task) pairs."""
    tasks = []
    for name in split_names(split):
        path = Path(root) / f"refer_{name}.json"
        for k, task in enumerate(_read_json(path, list)):
            if not isinstance(task, dict):
                raise ValueError(f"{path}: task {k} is not an object")
            missing = [key for key in ("task_id", "image_id", "phrase", "Polygons") if key not in task]
            if missing:
                raise ValueError(f"{path}: task {k} ({task.get('task_id', '?')}) lacks keys {missing}")
            tasks.append((path, task))
    return tasks


class PhraseCutDataset(Dataset):
    """PhraseCut samples as ``{"image", "mask", "prompt", "sample_index", "image_id"}``.

    Args:
        root: the ``VGPhraseCut_v0`` folder.
        split: ``train``, ``val``, ``test``, ``miniv`` or a ``_``-joined combination (``val_miniv``).
        image_size: side of the square model input (384 in the dissertation).
        crop: training crop of §3.3 (square of side min(H, W) around the object) before resizing; when
            False the full image is squashed to ``image_size`` (evaluation protocol).
        prompt_mode: ``raw`` phrase, fixed ``template``, or a ``random`` one of the 9 CLIPSeg templates.
        template: the fixed template for ``prompt_mode="template"``.
        skip_invalid_images: drop the 17 Visual Genome ids with a wrong annotated size (CLIPSeg does).
        images_dir: image folder, default ``root/images``.
        limit: keep only the first ``limit`` samples (quick runs).
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "test",
        image_size: int = 384,
        crop: bool = False,
        prompt_mode: str = "raw",
        template: str = DEFAULT_EVAL_TEMPLATE,
        skip_invalid_images: bool = True,
        images_dir: str | Path | None = None,
        limit: int | None = None,
    ):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"PhraseCut root folder not found: {self.root} (set LDZNET_PHRASECUT_ROOT "
                "or pass the VGPhraseCut_v0 folder)"
            )
        if prompt_mode not in PROMPT_MODES:
            raise ValueError(f"prompt_mode must be one of {PROMPT_MODES}, got {prompt_mode!r}")
        if "{}" not in template:
            raise ValueError(f"template must contain '{{}}' for the phrase, got {template!r}")
        self.split = split
        self.image_size = int(image_size)
        self.crop = bool(crop)
        self.prompt_mode = prompt_mode
        self.template = template
        self.images_dir = Path(images_dir) if images_dir is not None else self.root / "images"
        info = load_image_info(self.root)
        self.samples: list[dict] = []
        for path, task in load_tasks(self.root, split):
            image_id = int(task["image_id"])
            if skip_invalid_images and image_id in INVALID_IMAGE_IDS:
                continue
            if image_id not in info:
                raise ValueError(
                    f"{path}: task {task['task_id']} uses image {image_id}, absent from "
                    f"{self.root / 'image_data_split.json'}"
                )
            phrase = str(task["phrase"]).strip()
            if not phrase:
                raise ValueError(f"{path}: task {task['task_id']} (image {image_id}) has an empty phrase")
            polygons = task["Polygons"]
            if not isinstance(polygons, list) or not polygons:
                raise ValueError(f"{path}: task {task['task_id']} has no Polygons")
            self.samples.append(
                {
                    "task_id": str(task["task_id"]),
                    "image_id": image_id,
                    "phrase": phrase,
                    "polygons": polygons,
                    "source": str(path),
                    "width": int(info[image_id]["width"]),
                    "height": int(info[image_id]["height"]),
                }
            )
        if limit is not None:
            self.samples = self.samples[: int(limit)]

    def __len__(self) -> int:
        return len(self.samples)

    def image_path(self, image_id: int) -> Path:
        return self.images_dir / f"{image_id}.jpg"

    def load_mask(self, index: int):
        """Full-resolution union mask (H, W) uint8 of sample ``index``."""
        sample = self.samples[index]
        where = f"{sample['source']} task {sample['task_id']} Polygons"
        parts = []
        for i, instance in enumerate(sample["polygons"]):
            if not isinstance(instance, list):
                raise ValueError(f"{where}[{i}]: an instance must be a list of polygons")
            parts.extend(instance)
        return xy_polygons_to_mask(parts, sample["height"], sample["width"], where)

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[index]
        path = self.image_path(sample["image_id"])
        image = read_rgb(path, log=log)
        mask = self.load_mask(index)
        if image.shape[:2] != (sample["height"], sample["width"]):
            raise ValueError(
                f"{path}: image is {image.shape[0]}x{image.shape[1]} (HxW) but "
                f"image_data_split.json says {sample['height']}x{sample['width']}"
            )
        check_same_size(image, mask, f"task {sample['task_id']}")
        if self.crop:
            rows, cols = random_square_crop(mask)
            image, mask = image[rows, cols], mask[rows, cols]
        size = (self.image_size, self.image_size)
        prompt = apply_prompt(sample["phrase"], self.prompt_mode, self.template)
        return {
            "image": image_to_tensor(image, size),
            "mask": mask_to_tensor(mask, size),
            "prompt": prompt,
            "sample_index": index,
            "image_id": str(sample["image_id"]),
        }


# ----------------------------------------------------------------------------------------------------
# Fixture writers: the real on-disk format, for tests and the miniature demo world.


def _box_of(polygons: Sequence[Sequence[Sequence[float]]]) -> list[float]:
    xs = [float(p[0]) for polygon in polygons for p in polygon]
    ys = [float(p[1]) for polygon in polygons for p in polygon]
    return [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]


def make_phrasecut_task(
    image_id: int,
    phrase: str,
    instances: Sequence,
    ann_ids: Sequence[int] | None = None,
    name: str | None = None,
    attributes: Sequence[str] = (),
    phrase_type: str = "name",
) -> dict:
    """One ``refer_<split>.json`` task; ``instances``: per instance, a list of [[x, y], ...] polygons."""
    if ann_ids is None:
        ann_ids = [int(image_id) * 100 + k for k in range(len(instances))]
    return {
        "task_id": f"{int(image_id)}__" + "_".join(str(a) for a in ann_ids),
        "image_id": int(image_id),
        "ann_ids": [int(a) for a in ann_ids],
        "instance_boxes": [_box_of(instance) for instance in instances],
        "Polygons": [
            [[[float(x), float(y)] for x, y in polygon] for polygon in instance] for instance in instances
        ],
        "phrase": phrase,
        "phrase_structure": {
            "name": name if name is not None else phrase.split()[-1] if phrase.split() else "",
            "attributes": list(attributes),
            "relation_ids": [],
            "relation_descriptions": [],
            "type": phrase_type,
        },
    }


def write_image_data_split(root: str | Path, entries: Iterable[dict]) -> Path:
    """Add/replace entries of ``image_data_split.json`` (keyed by image_id); keeps the others."""
    path = Path(root) / "image_data_split.json"
    current = {int(e["image_id"]): e for e in _read_json(path, list)} if path.is_file() else {}
    for entry in entries:
        current[int(entry["image_id"])] = dict(entry)
    write_json(path, [current[k] for k in sorted(current)])
    return path


def write_phrasecut_split(root: str | Path, split: str, samples: Sequence[dict]) -> Path:
    """Write one split of a (tiny) PhraseCut in the real VGPhraseCut_v0 format; returns ``root``.

    ``samples``: list of ``{"image_id": int, "image": HxWx3 uint8, "phrases": [{"phrase": str,
    "instances": [[[x, y], ...] polygons per instance], optional "name", "attributes", "ann_ids"}]}``.
    Writes ``images/<id>.jpg``, ``refer_<split>.json``, ``refer_input_<split>.json``, merges
    ``image_data_split.json`` and ``name_att_rel_count.json``.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    root = Path(root)
    tasks, entries = [], []
    for sample in samples:
        image_id = int(sample["image_id"])
        height, width = sample["image"].shape[:2]
        write_image(root / "images" / f"{image_id}.jpg", sample["image"])
        entries.append(
            {
                "width": int(width),
                "url": f"https://cs.stanford.edu/people/rak248/VG_100K/{image_id}.jpg",
                "height": int(height),
                "image_id": image_id,
                "coco_id": None,
                "flickr_id": None,
                "split": split,
            }
        )
        for item in sample["phrases"]:
            tasks.append(
                make_phrasecut_task(
                    image_id,
                    item["phrase"],
                    item["instances"],
                    item.get("ann_ids"),
                    item.get("name"),
                    item.get("attributes", ()),
                )
            )
    write_image_data_split(root, entries)
    write_json(root / f"refer_{split}.json", tasks)
    inputs = [
        {k: t[k] for k in ("task_id", "image_id", "phrase")}
        | {
            "phrase_structure": {
                k: t["phrase_structure"][k] for k in ("name", "attributes", "relation_descriptions")
            }
        }
        for t in tasks
    ]
    write_json(root / f"refer_input_{split}.json", inputs)
    counts_path = root / "name_att_rel_count.json"
    counts = _read_json(counts_path, dict) if counts_path.is_file() else {"cat": [], "att": [], "rel": []}
    names = {name: count for name, count in counts.get("cat", [])}
    for task in tasks:
        key = task["phrase_structure"]["name"]
        names[key] = names.get(key, 0) + 1
    counts["cat"] = sorted(([n, c] for n, c in names.items()), key=lambda item: -item[1])
    write_json(counts_path, counts)
    return root
