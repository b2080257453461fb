"""CelebA, the real faces of the face experiment (dissertation §2.3.2.1, ref. [68]; docs/formats.md §7).

Real layout (torchvision's): `<root>/img_align_celeba/000001.jpg ...` (178x218 aligned JPEGs),
`<root>/list_eval_partition.txt` (`000001.jpg 0`; 0/1/2 = train/valid/test) and
`<root>/list_landmarks_align_celeba.txt` (line 1: the image count, line 2: the ten column names
`lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x rightmouth_y`,
then `000001.jpg    69  109  106  113 ...`, runs of spaces; pixel coordinates in the aligned image). The
128x128 crop used by SfSNet/SharinGAN was never released; ours is a square crop of side `crop_size` centred at
(`crop_center_x`, `crop_center_y`) of the aligned image (defaults: the central 178x178 square), resized to
`image_size`.

Face masks (`landmark_face_mask`): CelebA ships no face masks, the official pseudo-label CSV carried masks of
unknown origin, and SfS losses over hair and background teach the network to explain them with shading. We
derive one from the five landmarks: an ellipse whose axis runs from the eye centre E (mean of the eyes) to the
mouth centre M (mean of the mouth corners), with h = |M - E| and d = |right eye - left eye|; centre E + 0.4 h
along that axis, semi-axes 1.1 h along it (from E - 0.7 h, mid-forehead, below most hairlines, to E + 1.5 h,
just above the chin) and 0.95 d across it (inside the cheeks; a face is about 2.2 inter-ocular distances wide).
These are rule-of-thirds face proportions (hairline-brow, brow-nose base, nose base-chin equal; eye to mouth
about 1.2 thirds), chosen conservatively: a mask that misses some skin costs supervision, one that covers hair
or background supervises the wrong thing.

Training reads CelebA through its pseudo-labels: `sharingan.pseudo_labels` writes the cropped face and its
normal/albedo/mask PNGs and a SharinGAN-format CSV (see `sfsnet_synthetic.read_face_csv`);
`pseudo_labelled_dataset` reads them back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from common.checkpoints import write_text
from common.images import read_rgb
from sharingan.data.sfsnet_synthetic import (
    FaceLabelDataset,
    read_face_csv,
    real_looking_face,
    split_records,
    to_chw,
    write_png,
)

IMAGE_FOLDER = "img_align_celeba"
PARTITION_FILE = "list_eval_partition.txt"
LANDMARK_FILE = "list_landmarks_align_celeba.txt"
LANDMARK_COLUMNS = ("lefteye_x", "lefteye_y", "righteye_x", "righteye_y", "nose_x", "nose_y", "leftmouth_x",
                    "leftmouth_y", "rightmouth_x", "rightmouth_y")
# landmark ellipse (module docstring): centre E + 0.4 h, semi-axes 1.1 h along the eye-mouth axis, 0.95 d across
MASK_CENTER_H, MASK_ALONG_H, MASK_ACROSS_D = 0.4, 1.1, 0.95
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


def read_landmarks(root: str | Path) -> dict[str, np.ndarray]:
    """`list_landmarks_align_celeba.txt` -> {file name: (5, 2) float array of (x, y)}, in the order left eye,
    right eye, nose, left mouth corner, right mouth corner. Errors name the file and line."""
    path = Path(root) / LANDMARK_FILE
    if not path.is_file():
        raise FileNotFoundError(f"CelebA landmark file missing: {path}")
    lines = path.read_text().splitlines()
    if len(lines) < 2:
        raise ValueError(f"{path}: expected a count line and a column-name line, got {len(lines)} lines")
    try:
        count = int(lines[0].strip())
    except ValueError as error:
        raise ValueError(f"{path} line 1: expected the image count, got {lines[0]!r}") from error
    if tuple(lines[1].split()) != LANDMARK_COLUMNS:
        raise ValueError(f"{path} line 2: expected the column names {' '.join(LANDMARK_COLUMNS)}, got {lines[1]!r}")
    landmarks = {}
    for number, line in enumerate(lines[2:], start=3):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 1 + len(LANDMARK_COLUMNS):
            raise ValueError(f"{path} line {number}: expected '<file> <10 coordinates>', got {line!r}")
        try:
            values = np.array([float(v) for v in fields[1:]], dtype=np.float64)
        except ValueError as error:
            raise ValueError(f"{path} line {number}: a coordinate is not a number ({line!r})") from error
        landmarks[fields[0]] = values.reshape(5, 2)
    if len(landmarks) != count:
        raise ValueError(f"{path}: line 1 announces {count} images, {len(landmarks)} rows follow")
    return landmarks


def write_landmarks(root: str | Path, landmarks: Mapping[str, np.ndarray]) -> Path:
    """Write `list_landmarks_align_celeba.txt` in CelebA's format (integer pixel coordinates)."""
    rows = []
    for name, points in landmarks.items():
        values = np.rint(np.asarray(points, dtype=np.float64).reshape(-1)).astype(int)
        if values.shape != (len(LANDMARK_COLUMNS),):
            raise ValueError(f"landmarks of {name}: expected 5 (x, y) points, got shape {np.shape(points)}")
        rows.append(f"{name} " + "".join(f"{v:5d}" for v in values))
    path = Path(root) / LANDMARK_FILE
    write_text(path, "\n".join([str(len(rows)), " ".join(LANDMARK_COLUMNS), *rows]) + "\n")
    return path


def landmark_face_mask(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Five (x, y) landmarks (left eye, right eye, nose, left/right mouth corner) -> float32 (H, W) mask in
    {0, 1}: the ellipse of the module docstring, evaluated at pixel centres (pixel (r, c) sits at (c, r))."""
    points = np.asarray(points, dtype=np.float64).reshape(5, 2)
    eyes, mouth = points[:2].mean(axis=0), points[3:].mean(axis=0)
    along = mouth - eyes
    h = float(np.linalg.norm(along))
    d = float(np.linalg.norm(points[1] - points[0]))
    if h <= 0 or d <= 0:
        raise ValueError(f"landmarks {points.tolist()}: eyes and mouth must be distinct points")
    along /= h
    across = np.array([-along[1], along[0]])
    center = eyes + MASK_CENTER_H * h * along
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float64)
    offset = np.stack([cols - center[0], rows - center[1]], axis=-1)
    u = offset @ along / (MASK_ALONG_H * h)
    v = offset @ across / (MASK_ACROSS_D * d)
    return (u * u + v * v <= 1.0).astype(np.float32)


def crop_box(image_shape: tuple[int, int], crop_size: int = 178, center: tuple[float, float] | None = None
             ) -> tuple[int, int]:
    """(left, top) of the square crop of side crop_size at centre (x, y) (default the image centre)."""
    height, width = image_shape[:2]
    cx, cy = center if center is not None else (width / 2.0, height / 2.0)
    left, top = int(round(cx - crop_size / 2.0)), int(round(cy - crop_size / 2.0))
    if left < 0 or top < 0 or left + crop_size > width or top + crop_size > height:
        raise ValueError(f"crop of side {crop_size} at centre ({cx}, {cy}) leaves the {width}x{height} image")
    return left, top


def crop_landmarks(points: np.ndarray, image_shape: tuple[int, int], crop_size: int = 178,
                   center: tuple[float, float] | None = None, image_size: int = 128) -> np.ndarray:
    """Landmarks of the aligned image -> the same points in the crop of `crop_face` (pixel centres map to pixel
    centres: x' = (x - left + 0.5) * image_size / crop_size - 0.5)."""
    left, top = crop_box(image_shape, crop_size, center)
    scale = image_size / crop_size
    points = np.asarray(points, dtype=np.float64).reshape(5, 2)
    return (points - np.array([left, top]) + 0.5) * scale - 0.5


def crop_face(image: np.ndarray, crop_size: int = 178, center: tuple[float, float] | None = None,
              image_size: int = 128) -> np.ndarray:
    """Square crop (side crop_size, centre (x, y); default the image centre) resized to image_size."""
    left, top = crop_box(image.shape, crop_size, center)
    crop = image[top:top + crop_size, left:left + crop_size]
    if crop_size != image_size:
        crop = cv2.resize(crop, (image_size, image_size), interpolation=cv2.INTER_AREA)
    return crop


MASK_MODES = ("landmarks", "none")


class CelebAImages(Dataset):
    """Aligned CelebA images of one partition -> {"image" (3,S,S) in [0,1], "name"} and, with
    mask="landmarks", "mask" (1,S,S) in {0,1}: `landmark_face_mask` of the image's landmarks in the crop.
    mask="none" gives no mask (the pseudo-labels then supervise the whole crop)."""

    def __init__(self, root: str | Path, split: str = "train", image_size: int = 128, crop_size: int = 178,
                 crop_center: Sequence[float] | None = None, limit: int | None = None,
                 mask: str = "none") -> None:
        self.root = Path(root)
        if split not in (*SPLITS, "all"):
            raise ValueError(f"CelebA split {split!r}; expected one of {sorted(SPLITS)} or all")
        if mask not in MASK_MODES:
            raise ValueError(f"CelebA face mask {mask!r}; expected one of {MASK_MODES}")
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
        self.mask = mask
        self.landmarks = None
        if mask == "landmarks":
            landmarks = read_landmarks(self.root)
            absent = [n for n in names if n not in landmarks]
            if absent:
                raise ValueError(f"CelebA: {len(absent)} images have no row in {self.root / LANDMARK_FILE}, "
                                 f"e.g. {absent[:3]} (or set the face mask to 'none')")
            self.landmarks = {n: landmarks[n] for n in names}

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> dict:
        name = self.names[index]
        path = self.root / IMAGE_FOLDER / name
        # whole file decoded: a truncated JPEG is an error naming it
        array = read_rgb(path, "image file", pixels="unit_float")
        crop = crop_face(array, self.crop_size, self.crop_center, self.image_size)
        item = {"image": to_chw(crop), "name": name}
        if self.landmarks is not None:
            points = crop_landmarks(self.landmarks[name], array.shape, self.crop_size, self.crop_center,
                                    self.image_size)
            item["mask"] = torch.from_numpy(landmark_face_mask(points, (self.image_size, self.image_size)))[None]
        return item


def ellipsoid_landmarks(size: int) -> np.ndarray:
    """Five landmarks of `sfsnet_synthetic.ellipsoid_normals`' head at its default centre (0.5, 0.52) and radii
    (0.36, 0.44), in pixels of a size x size image: eyes at +-0.4 rx, 0.3 ry above the centre; nose tip at the
    centre; mouth corners at +-0.3 rx, 0.5 ry below it (a plausible face layout for tests)."""
    cx, cy, rx, ry = 0.5 * size, 0.52 * size, 0.36 * size, 0.44 * size
    return np.array([[cx - 0.4 * rx, cy - 0.3 * ry], [cx + 0.4 * rx, cy - 0.3 * ry], [cx, cy],
                     [cx - 0.3 * rx, cy + 0.5 * ry], [cx + 0.3 * rx, cy + 0.5 * ry]]) - 0.5


def pseudo_labelled_dataset(label_csv: str | Path, split: str = "train", image_size: int = 128,
                            val_fraction: float = 0.0) -> FaceLabelDataset:
    """CelebA crops with their pseudo-labels (CSV written by `sharingan.pseudo_labels`)."""
    records = read_face_csv(label_csv)
    if split != "all" and val_fraction > 0:
        records = split_records(records, split, val_fraction)
    return FaceLabelDataset(records, image_size)


def write_celeba_fixture(root: str | Path, counts: Sequence[int] = (6, 2, 2), seed: int = 0,
                         images: Sequence[np.ndarray] | None = None,
                         landmarks: Sequence[np.ndarray] | None = None) -> Path:
    """CelebA in its real layout: 178x218 JPEGs in img_align_celeba/, list_eval_partition.txt and
    list_landmarks_align_celeba.txt.

    `counts` = images in train/valid/test. `images` (HxWx3 float RGB, any size) are used when given; otherwise
    procedural faces with a 'hair' band and a textured background are drawn (a real-looking domain shift).
    `landmarks` (one (5, 2) array of (x, y) per image, in the coordinates of the given image) are scaled to the
    178x218 image and written; without them, the procedural faces' landmarks are written (images given without
    landmarks: no landmark file). Returns root.
    """
    root = Path(root)
    folder = root / IMAGE_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    total = sum(counts)
    if images is not None and len(images) != total:
        raise ValueError(f"write_celeba_fixture: {len(images)} images given for counts {tuple(counts)}")
    if landmarks is not None and len(landmarks) != total:
        raise ValueError(f"write_celeba_fixture: {len(landmarks)} landmark sets given for counts {tuple(counts)}")
    lines, points = [], {}
    index = 0
    for split, count in enumerate(counts):
        for _ in range(count):
            name = f"{index + 1:06d}.jpg"
            if images is not None:
                face = np.asarray(images[index], dtype=np.float32)
                marks = None if landmarks is None else np.asarray(landmarks[index], dtype=np.float64)
            else:
                face, _ = real_looking_face(rng)
                marks = ellipsoid_landmarks(face.shape[0])
            if marks is not None:  # pixel centres map to pixel centres under cv2.resize
                scale = np.array([ALIGNED_SIZE[1] / face.shape[1], ALIGNED_SIZE[0] / face.shape[0]])
                points[name] = (marks.reshape(5, 2) + 0.5) * scale - 0.5
            face = cv2.resize(face, (ALIGNED_SIZE[1], ALIGNED_SIZE[0]), interpolation=cv2.INTER_LINEAR)
            write_png(folder / name, face)
            lines.append(f"{name} {split}")
            index += 1
    write_text(root / PARTITION_FILE, "\n".join(lines) + "\n")
    if points:
        write_landmarks(root, points)
    write_text(root / "identity_CelebA.txt", "\n".join(f"{line.split()[0]} {i % 3 + 1}"
                                                         for i, line in enumerate(lines)) + "\n")
    return root

