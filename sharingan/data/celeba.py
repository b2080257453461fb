"""CelebA, the real faces of the face experiment (dissertation §2.3.2.1, ref. [68]; docs/formats.md §7).

Real layout (torchvision's): `<root>/img_align_celeba/000001.jpg ...` (178x218 aligned JPEGs) and
`<root>/list_eval_partition.txt` (`000001.jpg 0`; 0/1/2 = train/valid/test). The 128x128 crop used by
SfSNet/SharinGAN was never released; ours is a square crop of side `crop_size` centred at (`crop_center_x`,
`crop_center_y`) of the aligned image (defaults: the central 178x178 square), resized to `image_size`.

Training reads CelebA through its pseudo-labels: `sharingan.pseudo_labels` writes the cropped face and its
normal/albedo/mask PNGs and a SharinGAN-format CSV (see `sfsnet_synthetic.read_face_csv`);
`pseudo_labelled_dataset` reads them back.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from torch.utils.data import Dataset

from common.checkpoints import write_text
from sharingan.data.sfsnet_synthetic import (
    FaceLabelDataset,
    read_face_csv,
    read_rgb,
    real_looking_face,
    split_records,
    to_chw,
    write_png,
)

IMAGE_FOLDER = "img_align_celeba"
PARTITION_FILE = "list_eval_partition.txt"
SPLITS = {"train": 0, "val": 1, "valid": 1, "test": 2}
ALIGNED_SIZE = (218, 178)  # (H, W) of the aligned images


def read_partition(root: str | Path) -> dict[str, int]:
    """`list_eval_partition.txt` -> {file name: 0/1/2}; malformed lines raise naming the file and line."""
    path = Path(root) / PARTITION_FILE
    if not path.is_file():
        raise FileNotFoundError(f"CelebA partition file missing: {path}")
    partition = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
            raise ValueError(f"{path} line {number}: expected '<file> <0|1|2>', got {line!r}")
        partition[fields[0]] = int(fields[1])
    if not partition:
        raise ValueError(f"CelebA partition file {path} is empty")
    return partition


def crop_face(image: np.ndarray, crop_size: int = 178, center: tuple[float, float] | None = None,
              image_size: int = 128) -> np.ndarray:
    """Square crop (side crop_size, centre (x, y); default the image centre) resized to image_size."""
    height, width = image.shape[:2]
    cx, cy = center if center is not None else (width / 2.0, height / 2.0)
    left, top = int(round(cx - crop_size / 2.0)), int(round(cy - crop_size / 2.0))
    if left < 0 or top < 0 or left + crop_size > width or top + crop_size > height:
        raise ValueError(f"crop of side {crop_size} at centre ({cx}, {cy}) leaves the {width}x{height} image")
    crop = image[top:top + crop_size, left:left + crop_size]
    if crop_size != image_size:
        crop = cv2.resize(crop, (image_size, image_size), interpolation=cv2.INTER_AREA)
    return crop


class CelebAImages(Dataset):
    """Aligned CelebA images of one partition -> {"image" (3,S,S) in [0,1], "name"}."""

    def __init__(self, root: str | Path, split: str = "train", image_size: int = 128, crop_size: int = 178,
                 crop_center: Sequence[float] | None = None, limit: int | None = None) -> None:
        self.root = Path(root)
        if split not in (*SPLITS, "all"):
            raise ValueError(f"CelebA split {split!r}; expected one of {sorted(SPLITS)} or all")
        folder = self.root / IMAGE_FOLDER
        if not folder.is_dir():
            raise FileNotFoundError(f"CelebA image folder missing: {folder}")
        partition = read_partition(self.root)
        names = sorted(n for n, p in partition.items() if split == "all" or p == SPLITS[split])
        if limit is not None:
            names = names[:limit]
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise FileNotFoundError(f"CelebA: {len(missing)} listed images missing in {folder}, e.g. {missing[:3]}")
        if not names:
            raise ValueError(f"CelebA: no image in split {split!r} of {self.root / PARTITION_FILE}")
        self.names = names
        self.image_size, self.crop_size = image_size, crop_size
        self.crop_center = tuple(crop_center) if crop_center is not None else None

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> dict:
        path = self.root / IMAGE_FOLDER / self.names[index]
        array = read_rgb(path)  # whole file decoded: a truncated JPEG is an error naming it
        crop = crop_face(array, self.crop_size, self.crop_center, self.image_size)
        return {"image": to_chw(crop), "name": self.names[index]}


def pseudo_labelled_dataset(label_csv: str | Path, split: str = "train", image_size: int = 128,
                            val_fraction: float = 0.0) -> FaceLabelDataset:
    """CelebA crops with their pseudo-labels (CSV written by `sharingan.pseudo_labels`)."""
    records = read_face_csv(label_csv)
    if split != "all" and val_fraction > 0:
        records = split_records(records, split, val_fraction)
    return FaceLabelDataset(records, image_size)


def write_celeba_fixture(root: str | Path, counts: Sequence[int] = (6, 2, 2), seed: int = 0,
                         images: Sequence[np.ndarray] | None = None) -> Path:
    """CelebA in its real layout: 178x218 JPEGs in img_align_celeba/ and list_eval_partition.txt.

    `counts` = images in train/valid/test. `images` (HxWx3 float RGB, any size) are used when given; otherwise
    procedural faces with a 'hair' band and a textured background are drawn (a real-looking domain shift).
    Returns root.
    """
    root = Path(root)
    folder = root / IMAGE_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    total = sum(counts)
    if images is not None and len(images) != total:
        raise ValueError(f"write_celeba_fixture: {len(images)} images given for counts {tuple(counts)}")
    lines = []
    index = 0
    for split, count in enumerate(counts):
        for _ in range(count):
            name = f"{index + 1:06d}.jpg"
            if images is not None:
                face = np.asarray(images[index], dtype=np.float32)
            else:
                face, _ = real_looking_face(rng)
            face = cv2.resize(face, (ALIGNED_SIZE[1], ALIGNED_SIZE[0]), interpolation=cv2.INTER_LINEAR)
            write_png(folder / name, face)
            lines.append(f"{name} {split}")
            index += 1
    write_text(root / PARTITION_FILE, "\n".join(lines) + "\n")
    write_text(root / "identity_CelebA.txt", "\n".join(f"{line.split()[0]} {i % 3 + 1}"
                                                         for i, line in enumerate(lines)) + "\n")
    return root

