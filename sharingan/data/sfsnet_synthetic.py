"""SfSNet synthetic faces (dissertation §2.3.2.1, ref. [22]; docs/formats.md §6, docs/ref-sharingan.md §3.4).

On-disk layout read here (as in the public SfSNet sample): `<root>/<folder>/<id>_<modality>_<i>_<j>.png` for the
modalities face, normal, albedo, mask (8-bit PNG) and `<id>_light_<i>_<j>.txt` (one line of 27 tab-separated
SH coefficients, [R 0:9 | G 9:18 | B 18:27]). A sample is keyed `<folder>_<id>_<i>_<j>`. Normals are stored in
the [0, 1] encoding (n + 1) / 2. Images are resized to `image_size` (128 in the paper) when they differ.

The official SharinGAN training instead reads CSV files without header (`Syn_train.csv`, `CelebA_train.csv`):
columns image, mask, normal, albedo, L0..L26. `read_face_csv` / `write_face_csv` handle that format, which is
also what `sharingan.pseudo_labels` writes for CelebA. `FaceLabelDataset` serves both sources.

Writers (`write_synthetic_sample`, `write_sfsnet_synthetic_fixture`) produce the same layout for tests and the
miniature world; `procedural_face` renders a consistent sample: face = sh_shading(normal, light) * albedo.
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from common.checkpoints import atomic_write, write_text
from common.images import read_image, read_rgb
from sharingan.models.sfsnet import LIGHTING_DIM, sh_shading

log = logging.getLogger(__name__)

MODALITIES = ("face", "normal", "albedo", "mask")
_FACE_NAME = re.compile(r"^(?P<id>.+)_face_(?P<i>\d+)_(?P<j>\d+)\.png$")


# ----------------------------------------------------------------------------------------------- file reading
def read_mask(path: str | Path, image_size: int | None = None, threshold: float = 0.5) -> np.ndarray:
    """Mask PNG (grey or RGB) -> float32 HxW in {0, 1}: value / max > threshold."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mask file missing: {path}")
    array, _ = read_image(path, "mask file")
    scale = 65535.0 if array.dtype == np.uint16 else 255.0
    if array.ndim == 3:
        array = array[..., :-1].max(axis=2) if array.shape[2] in (2, 4) else array.max(axis=2)
    array = array.astype(np.float32) / scale
    if image_size is not None and array.shape != (image_size, image_size):
        array = cv2.resize(array, (image_size, image_size), interpolation=cv2.INTER_NEAREST)
    return (array > threshold).astype(np.float32)


def resize_square(array: np.ndarray, image_size: int | None, interpolation: int) -> np.ndarray:
    """Resize to image_size x image_size (unchanged when None or already that size)."""
    if image_size is None or array.shape[:2] == (image_size, image_size):
        return array
    return cv2.resize(array, (image_size, image_size), interpolation=interpolation)


def check_same_size(where: str, **files: tuple[Path | str, np.ndarray]) -> None:
    """Image and labels of one sample must cover the same pixels: a size mismatch is a data error naming every
    file and its size, never silently resized away."""
    sizes = {name: tuple(array.shape[:2]) for name, (_, array) in files.items()}
    if len(set(sizes.values())) > 1:
        listed = ", ".join(f"{name} {path} is {sizes[name][0]}x{sizes[name][1]}"
                           for name, (path, _) in files.items())
        raise ValueError(f"{where}: image and labels differ in size (HxW): {listed}")


def read_light(path: str | Path) -> np.ndarray:
    """`*_light_*.txt`: 27 whitespace-separated floats -> float32 (27,)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"lighting file missing: {path}")
    try:
        values = np.array([float(v) for v in path.read_text().split()], dtype=np.float32)
    except ValueError as error:
        raise ValueError(f"lighting file {path} holds a non-number: {error}") from error
    if values.shape != (LIGHTING_DIM,):
        raise ValueError(f"lighting file {path} holds {values.size} numbers, expected {LIGHTING_DIM}")
    return values


def write_light(path: str | Path, lighting: Sequence[float]) -> None:
    values = np.asarray(lighting, dtype=np.float64).ravel()
    if values.shape != (LIGHTING_DIM,):
        raise ValueError(f"lighting for {path} has {values.size} values, expected {LIGHTING_DIM}")
    write_text(path, "\t".join(f"{v:.6f}" for v in values) + "\n")


def write_png(path: str | Path, image: np.ndarray) -> None:
    """Float [0,1] HxW or HxWx3 (RGB) -> 8-bit PNG, atomically."""
    array = np.asarray(image)
    if array.dtype != np.uint8:
        array = (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(Path(path).suffix or ".png", array)
    if not ok:
        raise ValueError(f"cannot encode {path}")
    with atomic_write(path, "wb") as file:
        file.write(encoded.tobytes())


def to_chw(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.transpose(array, (2, 0, 1))))


# -------------------------------------------------------------------------------------- samples and datasets
@dataclass(frozen=True)
class FaceRecord:
    """Paths of one labelled face: image, mask, normal ([0,1] PNG), albedo; lighting as 27 floats or a file."""

    key: str
    image: Path
    mask: Path
    normal: Path
    albedo: Path
    lighting: tuple[float, ...] | Path


def scan_synthetic(root: str | Path, strict: bool = True) -> list[FaceRecord]:
    """Find every `<id>_face_<i>_<j>.png` under root and pair it with its sibling files.

    strict=True: a face with a missing sibling raises an error naming the missing files. strict=False keeps only
    complete samples (the public SfSNet sample has incomplete sets) and logs how many were dropped.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"SfSNet synthetic root is not a folder: {root}")
    records, dropped = [], []
    for face in sorted(root.rglob("*_face_*.png")):
        match = _FACE_NAME.match(face.name)
        if match is None:
            continue
        stem, i, j = match["id"], match["i"], match["j"]
        siblings = {m: face.with_name(f"{stem}_{m}_{i}_{j}.png") for m in MODALITIES[1:]}
        light = face.with_name(f"{stem}_light_{i}_{j}.txt")
        missing = [p for p in (*siblings.values(), light) if not p.is_file()]
        if missing:
            if strict:
                raise FileNotFoundError(f"SfSNet sample {face} lacks: {', '.join(str(p) for p in missing)}")
            dropped.append(face)
            continue
        folder = face.parent.relative_to(root).as_posix().replace("/", "_") or "."
        records.append(FaceRecord(f"{folder}_{stem}_{i}_{j}", face, siblings["mask"], siblings["normal"],
                                  siblings["albedo"], light))
    if dropped:
        log.warning("SfSNet synthetic: dropped %d incomplete samples under %s (strict=False)", len(dropped), root)
    if not records:
        raise FileNotFoundError(f"no SfSNet synthetic sample (<id>_face_<i>_<j>.png with siblings) under {root}")
    return records


def split_records(records: Sequence, split: str, val_fraction: float) -> list:
    """Deterministic split of a sorted list: train = first (1 - val_fraction), val = the rest, all = all."""
    if split == "all":
        return list(records)
    cut = int(len(records) * (1.0 - val_fraction))
    if split == "train":
        return list(records[:cut])
    if split in ("val", "test"):
        return list(records[cut:])
    raise ValueError(f"unknown split {split!r}; expected train, val, test or all")


def read_face_csv(csv_path: str | Path, root: str | Path | None = None,
                  prefix: str = "/vulcan/scratch/koutilya") -> list[FaceRecord]:
    """SharinGAN's CSV (no header): image, mask, normal, albedo, L0..L26.

    Relative paths are resolved against `root` (default: the CSV's folder); an absolute path that starts with
    the official `prefix` has the prefix replaced by `root`.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"face label CSV missing: {csv_path}")
    root = Path(root) if root is not None else csv_path.parent
    records = []
    with open(csv_path, newline="") as file:
        for number, row in enumerate(csv.reader(file), start=1):
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != 4 + LIGHTING_DIM:
                raise ValueError(f"{csv_path} line {number}: {len(row)} columns, expected {4 + LIGHTING_DIM} "
                                 "(image, mask, normal, albedo, 27 SH coefficients)")
            paths = []
            for cell in row[:4]:
                cell = cell.strip()
                if cell.startswith(prefix):
                    cell = cell[len(prefix):].lstrip("/")
                paths.append(Path(cell) if Path(cell).is_absolute() else root / cell)
            try:
                lighting = tuple(float(v) for v in row[4:])
            except ValueError as error:
                raise ValueError(f"{csv_path} line {number}: lighting is not numeric ({error})") from error
            records.append(FaceRecord(paths[0].stem, paths[0], paths[1], paths[2], paths[3], lighting))
    if not records:
        raise ValueError(f"face label CSV {csv_path} has no rows")
    return records


def write_face_csv(csv_path: str | Path, records: Sequence[FaceRecord], root: str | Path | None = None) -> Path:
    """Write records in SharinGAN's CSV format; paths relative to `root` (default: the CSV's folder)."""
    csv_path = Path(csv_path)
    root = Path(root) if root is not None else csv_path.parent
    lines = []
    for record in records:
        lighting = read_light(record.lighting) if isinstance(record.lighting, Path) else record.lighting
        cells = [Path(p).relative_to(root).as_posix() if Path(p).is_relative_to(root) else str(p)
                 for p in (record.image, record.mask, record.normal, record.albedo)]
        cells += [f"{float(v):.6f}" for v in lighting]
        lines.append(",".join(cells))
    write_text(csv_path, "\n".join(lines) + "\n")
    return csv_path


class FaceLabelDataset(Dataset):
    """Labelled faces -> {"image", "normal" ([0,1]-encoded), "albedo", "mask" (1,H,W), "lighting" (27,), "key"}."""

    def __init__(self, records: Sequence[FaceRecord], image_size: int = 128, mask_threshold: float = 0.5) -> None:
        if not records:
            raise ValueError("FaceLabelDataset: no records")
        self.records = list(records)
        self.image_size = image_size
        self.mask_threshold = mask_threshold

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        record = self.records[index]
        size = self.image_size
        lighting = read_light(record.lighting) if isinstance(record.lighting, Path) \
            else np.asarray(record.lighting, dtype=np.float32)
        image, normal, albedo = (read_rgb(path, "image file", pixels="unit_float")
                                 for path in (record.image, record.normal, record.albedo))
        mask = read_mask(record.mask, None, self.mask_threshold)
        check_same_size(f"face sample {record.key}", image=(record.image, image), normal=(record.normal, normal),
                        albedo=(record.albedo, albedo), mask=(record.mask, mask))
        return {
            "image": to_chw(resize_square(image, size, cv2.INTER_AREA)),
            "normal": to_chw(resize_square(normal, size, cv2.INTER_LINEAR)),
            "albedo": to_chw(resize_square(albedo, size, cv2.INTER_AREA)),
            "mask": torch.from_numpy(resize_square(mask, size, cv2.INTER_NEAREST))[None],
            "lighting": torch.from_numpy(lighting),
            "key": record.key,
        }


def synthetic_dataset(root: str | Path | None = None, csv_path: str | Path | None = None, split: str = "train",
                      image_size: int = 128, val_fraction: float = 0.05, strict: bool = True) -> FaceLabelDataset:
    """SfSNet synthetic faces from a folder scan (`root`) or from an official-format CSV (`csv_path`)."""
    if csv_path:
        records = read_face_csv(csv_path, root)
    elif root:
        records = scan_synthetic(root, strict)
    else:
        raise ValueError("SfSNet synthetic data: set data.synthetic_root (folder) or data.synthetic_csv (CSV)")
    return FaceLabelDataset(split_records(records, split, val_fraction), image_size)


# ---------------------------------------------------------------------------------------------------- writers
def ellipsoid_normals(size: int, center=(0.5, 0.52), radii=(0.36, 0.44)) -> tuple[np.ndarray, np.ndarray]:
    """Unit normals (HxWx3, x right, y up, z towards the camera) and mask of a half-ellipsoid 'head'."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    u = ((xs + 0.5) / size - center[0]) / radii[0]
    v = -((ys + 0.5) / size - center[1]) / radii[1]
    inside = u * u + v * v < 1.0
    z = np.sqrt(np.clip(1.0 - u * u - v * v, 0.0, None))
    normals = np.stack([u / radii[0], v / radii[1], z / 0.35], axis=-1)
    normals /= np.maximum(np.linalg.norm(normals, axis=-1, keepdims=True), 1e-12)
    normals[~inside] = (0.0, 0.0, 1.0)
    return normals.astype(np.float32), inside.astype(np.float32)


def random_lighting(rng: np.random.Generator) -> np.ndarray:
    """A plausible SH light: ambient ~0.8 plus a random first-order direction, grey with a slight tint."""
    grey = np.zeros(9)
    grey[0] = rng.uniform(0.7, 0.9)
    direction = rng.normal(size=3)
    direction[2] = abs(direction[2]) + 0.5
    direction /= np.linalg.norm(direction)
    grey[1:4] = rng.uniform(0.2, 0.5) * np.array([direction[2], direction[0], direction[1]])
    grey[4:] = rng.normal(scale=0.05, size=5)
    tint = rng.uniform(0.9, 1.1, size=3)
    return np.concatenate([grey * t for t in tint]).astype(np.float32)


def procedural_face(size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One consistent synthetic sample: face = sh_shading(normal, light) * albedo inside the mask."""
    normals, mask = ellipsoid_normals(size, center=(0.5 + rng.uniform(-0.04, 0.04), 0.52),
                                      radii=(rng.uniform(0.32, 0.4), rng.uniform(0.4, 0.46)))
    skin = rng.uniform([0.55, 0.4, 0.3], [0.85, 0.65, 0.55])
    albedo = np.clip(skin + rng.normal(scale=0.02, size=(size, size, 3)), 0.0, 1.0).astype(np.float32)
    albedo *= mask[..., None]
    light = random_lighting(rng)
    shading = sh_shading(torch.from_numpy(normals).permute(2, 0, 1)[None],
                         torch.from_numpy(light)[None])[0].permute(1, 2, 0).numpy()
    face = np.clip(shading * albedo, 0.0, 1.0) * mask[..., None]
    encoded = (normals + 1.0) / 2.0 * mask[..., None]
    return {"face": face, "normal": encoded, "albedo": albedo, "mask": mask, "light": light}


def real_looking_face(rng: np.random.Generator, size: int = 128) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A procedural face dressed as a photograph (textured background, a dark 'hair' band, sensor noise,
    brighter exposure): the same geometry as `procedural_face` with a real-vs-synthetic domain shift.
    Returns (image, the underlying procedural sample)."""
    sample = procedural_face(size, rng)
    mask = sample["mask"][..., None]
    background = rng.uniform(0.1, 0.9, size=3) + rng.normal(scale=0.05, size=(size, size, 3))
    face = sample["face"] * 1.1 + rng.normal(scale=0.03, size=(size, size, 3))
    image = face * mask + background * (1.0 - mask)
    image[: size // 5] = rng.uniform(0.0, 0.4, size=3)
    return np.clip(image, 0.0, 1.0).astype(np.float32), sample


def write_synthetic_sample(root: str | Path, folder: str, sample_id: str, i: int, j: int, face: np.ndarray,
                           normal: np.ndarray, albedo: np.ndarray, mask: np.ndarray, light) -> Path:
    """Write one sample in the SfSNet layout; `normal` already [0,1]-encoded; returns the face path."""
    directory = Path(root) / folder
    directory.mkdir(parents=True, exist_ok=True)
    for name, array in (("face", face), ("normal", normal), ("albedo", albedo), ("mask", mask)):
        write_png(directory / f"{sample_id}_{name}_{i}_{j}.png", array)
    write_light(directory / f"{sample_id}_light_{i}_{j}.txt", light)
    return directory / f"{sample_id}_face_{i}_{j}.png"


def write_sfsnet_synthetic_fixture(root: str | Path, count: int, image_size: int = 128, seed: int = 0,
                                   per_folder: int = 50) -> Path:
    """`count` procedural samples under root in the SfSNet layout (folders 0001, 0002, ...); returns root."""
    rng = np.random.default_rng(seed)
    for index in range(count):
        sample = procedural_face(image_size, rng)
        write_synthetic_sample(root, f"{index // per_folder + 1:04d}", f"{index:06d}", 1, index % 5 + 1,
                               sample["face"], sample["normal"], sample["albedo"], sample["mask"], sample["light"])
    return Path(root)
