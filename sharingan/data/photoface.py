"""Photoface, the test set of Table 2.3 (ref. [32]; docs/ref-sharingan.md §3.4;
docs/formats.md §8; protocol: docs/protocols.md §3).

SharinGAN's pre-aligned form: list files `Photoface_{train,test,img}_list.txt` whose lines are
`/scratch2/photoface-results/<subject>/<session>/im<k>_align.png f1 f2 f3` (three 0/1 flags of unknown meaning;
the img list has none). Each image has `im<k>_normal.png` (normals in the [0,1] encoding, RGB = xyz) and
`im<k>_mask.png` siblings. `root` is the folder that holds `photoface-results/` (the official code replaced
`/scratch2` by `.`). Splits: test = the test list (2,153 images); val = the last 15 % of the train list,
train = the first 85 % (the official selection split).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from common.checkpoints import write_text
from common.images import read_rgb
from sharingan.data.sfsnet_synthetic import (
    check_same_size,
    read_mask,
    real_looking_face,
    resize_square,
    to_chw,
    write_png,
)

RESULTS_FOLDER = "photoface-results"
LIST_FILES = {"train": "Photoface_train_list.txt", "test": "Photoface_test_list.txt",
              "img": "Photoface_img_list.txt"}
TRAIN_FRACTION = 0.85
MASK_THRESHOLD = 0.9


@dataclass(frozen=True)
class PhotofaceEntry:
    """One list line: path relative to root (`photoface-results/...`) and its flags (None in the img list)."""

    relative: str
    flags: tuple[int, int, int] | None

    @property
    def subject(self) -> str:
        return Path(self.relative).parts[1]


def _relative(path: str) -> str:
    marker = RESULTS_FOLDER + "/"
    position = path.find(marker)
    if position >= 0:
        return path[position:]
    return path.lstrip("./")


def parse_photoface_list(path: str | Path) -> list[PhotofaceEntry]:
    """Parse a Photoface list (1 or 4 fields a line); malformed lines raise naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Photoface list missing: {path}")
    entries = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) not in (1, 4) or not fields[0].endswith("_align.png"):
            raise ValueError(f"{path} line {number}: expected '<.../im<k>_align.png> [f1 f2 f3]', got {line!r}")
        flags = None
        if len(fields) == 4:
            if any(flag not in ("0", "1") for flag in fields[1:]):
                raise ValueError(f"{path} line {number}: flags must be 0 or 1, got {fields[1:]}")
            flags = tuple(int(flag) for flag in fields[1:])
        entries.append(PhotofaceEntry(_relative(fields[0]), flags))
    if not entries:
        raise ValueError(f"Photoface list {path} is empty")
    return entries


def split_entries(list_dir: str | Path, split: str) -> list[PhotofaceEntry]:
    """test -> test list; train / val -> first 85 % / last 15 % of the train list; img -> the img list."""
    list_dir = Path(list_dir)
    if split == "test":
        return parse_photoface_list(list_dir / LIST_FILES["test"])
    if split == "img":
        return parse_photoface_list(list_dir / LIST_FILES["img"])
    if split in ("train", "val"):
        entries = parse_photoface_list(list_dir / LIST_FILES["train"])
        cut = int(len(entries) * TRAIN_FRACTION)
        return entries[:cut] if split == "train" else entries[cut:]
    raise ValueError(f"Photoface split {split!r}; expected train, val, test or img")


def sibling(path: Path, kind: str) -> Path:
    """`im1_align.png` -> `im1_normal.png` / `im1_mask.png`."""
    return path.with_name(path.name[: -len("_align.png")] + f"_{kind}.png")


class PhotofaceDataset(Dataset):
    """-> {"image" (3,S,S) in [0,1], "normal" (3,S,S) unit vectors, "mask" (1,S,S) in {0,1}, "path"}.

    All listed files are checked at construction; a missing one raises with its path (first 5 listed).
    """

    def __init__(self, root: str | Path, list_dir: str | Path | None = None, split: str = "test",
                 image_size: int = 128, limit: int | None = None) -> None:
        self.root = Path(root)
        list_dir = Path(list_dir) if list_dir is not None else self.root
        self.entries = split_entries(list_dir, split)
        if limit is not None:
            self.entries = self.entries[:limit]
        missing = []
        for entry in self.entries:
            image = self.root / entry.relative
            missing += [p for p in (image, sibling(image, "normal"), sibling(image, "mask")) if not p.is_file()]
        if missing:
            shown = ", ".join(str(p) for p in missing[:5])
            raise FileNotFoundError(f"Photoface ({split}, root {self.root}): {len(missing)} files missing: {shown}")
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> dict:
        image_path = self.root / self.entries[index].relative
        size = self.image_size
        normal_path, mask_path = sibling(image_path, "normal"), sibling(image_path, "mask")
        image = read_rgb(image_path, "image file", pixels="unit_float")
        normal_rgb = read_rgb(normal_path, "image file", pixels="unit_float")
        mask = read_mask(mask_path, None, MASK_THRESHOLD)
        check_same_size(f"Photoface sample {self.entries[index].relative}", image=(image_path, image),
                        normal=(normal_path, normal_rgb), mask=(mask_path, mask))
        normal = F.normalize(2.0 * torch.from_numpy(normal_rgb).permute(2, 0, 1) - 1.0, dim=0)
        if normal.shape[-1] != size or normal.shape[-2] != size:
            normal = F.normalize(F.interpolate(normal[None], size=(size, size), mode="bilinear",
                                               align_corners=False)[0], dim=0)
        mask = resize_square(mask, size, cv2.INTER_NEAREST)
        return {"image": to_chw(resize_square(image, size, cv2.INTER_AREA)), "normal": normal,
                "mask": torch.from_numpy(mask)[None], "path": self.entries[index].relative}


def write_photoface_image(root: str | Path, subject: str, session: str, k: int, image: np.ndarray,
                          normal: np.ndarray, mask: np.ndarray, flags: Sequence[int] = (1, 1, 1),
                          prefix: str = "/scratch2") -> str:
    """Write `im<k>_align.png` with its `_normal.png` ([0,1]-encoded normals) and `_mask.png` siblings under
    `root/photoface-results/<subject>/<session>/`; returns the list line (official prefix and flags)."""
    folder = Path(root) / RESULTS_FOLDER / subject / session
    write_png(folder / f"im{k}_align.png", image)
    write_png(folder / f"im{k}_normal.png", normal)
    write_png(folder / f"im{k}_mask.png", mask)
    relative = (folder / f"im{k}_align.png").relative_to(Path(root)).as_posix()
    return f"{prefix}/{relative} " + " ".join(str(int(flag)) for flag in flags)


def write_photoface_lists(root: str | Path, train_lines: Sequence[str], test_lines: Sequence[str]) -> None:
    """The three list files: train and test with flags, img (all images, path only)."""
    root = Path(root)
    write_text(root / LIST_FILES["train"], "\n".join(train_lines) + "\n")
    write_text(root / LIST_FILES["test"], "\n".join(test_lines) + "\n")
    write_text(root / LIST_FILES["img"], "\n".join(line.split()[0] for line in [*train_lines, *test_lines]) + "\n")


def write_photoface_fixture(root: str | Path, subjects: Sequence[str] = ("1001", "1002", "2001", "2002"),
                            sessions: int = 1, test_subjects: int = 2, image_size: int = 128, seed: int = 0,
                            prefix: str = "/scratch2") -> Path:
    """Photoface in SharinGAN's aligned form: 4 lit images per session (im0..im3) with normal/mask siblings,
    plus the three list files with the official path prefix and flags. The last `test_subjects` subjects go to
    the test list. Each image is a photograph-like procedural face (`real_looking_face`) whose normals are the
    stored ground truth. Returns root.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    train_lines, test_lines = [], []
    for number, subject in enumerate(subjects):
        for session in range(sessions):
            folder = f"2008-0{session % 9 + 1}-0{number % 9 + 1}_12-00-00"
            for k in range(4):
                image, sample = real_looking_face(rng, image_size)
                line = write_photoface_image(root, subject, folder, k, image, sample["normal"], sample["mask"],
                                             rng.integers(0, 2, size=3), prefix)
                (test_lines if number >= len(subjects) - test_subjects else train_lines).append(line)
    write_photoface_lists(root, train_lines, test_lines)
    return root
