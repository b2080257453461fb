"""CMU Multi-PIE for lighting classification (Table 2.4; dissertation §2.3.2.3; docs/formats.md §9).

Real layout: `<root>/session0S/multiview/<subject 3d>/<recording 2d>/<camera XX_Y>/
<subject>_<session>_<recording>_<camera XXY>_<shot 2d>.png` (e.g. `session01/multiview/001/01/05_1/
001_01_01_051_07.png`), where `root` is Multi-PIE's `data/` folder. Pre-processing follows the dissertation:
centre crop 300x300, resize to 128x128.

Protocol implemented here (the SfSNet recipe was never published in code; this is our documented choice):
- images: frontal camera 05_1, neutral-expression recordings (session, recording) in (1,1) (2,1) (3,1) (4,1)
  (4,2); classes = the illumination shots 00..18 (19 conditions, bob.db.multipie's "any flash" set);
- each estimated lighting (27 SH coefficients) is turned into a signature: the grey lighting (mean of the R,
  G, B coefficient sets) renders a front-facing unit hemisphere with `sh_shading`, and the rendered pixels are
  normalised to unit length (so global brightness and albedo scale do not matter);
- class prototypes are the re-normalised mean signatures of each shot over all OTHER subjects (leave one
  subject out, so a face is never classified against its own estimates);
- the score of a class is the cosine similarity of signature and prototype; top-k accuracy with
  `common.metrics.lighting.topk_accuracy`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from common.images import read_rgb
from sharingan.data.sfsnet_synthetic import ellipsoid_normals, to_chw, write_png
from sharingan.models.sfsnet import SH_COEFFICIENTS, sh_shading

NEUTRAL_RECORDINGS = ((1, 1), (2, 1), (3, 1), (4, 1), (4, 2))
DEFAULT_SHOTS = tuple(range(19))
FRONTAL_CAMERA = "05_1"
CROP_SIZE = 300
_NAME = re.compile(r"^(?P<subject>\d{3})_(?P<session>\d{2})_(?P<recording>\d{2})_(?P<camera>\d{3})"
                   r"_(?P<shot>\d{2})\.png$")


@dataclass(frozen=True)
class MultiPIEImage:
    path: Path
    subject: int
    session: int
    recording: int
    shot: int


def scan_multipie(root: str | Path, camera: str = FRONTAL_CAMERA,
                  recordings: Sequence[Sequence[int]] = NEUTRAL_RECORDINGS,
                  shots: Sequence[int] = DEFAULT_SHOTS) -> list[MultiPIEImage]:
    """All images of `camera` in the given (session, recording) pairs whose shot is one of `shots`."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"Multi-PIE root is not a folder: {root}")
    wanted = {(int(s), int(r)) for s, r in recordings}
    shots = {int(s) for s in shots}
    images = []
    for path in sorted(root.glob(f"session*/multiview/*/*/{camera}/*.png")):
        match = _NAME.match(path.name)
        if match is None:
            raise ValueError(f"Multi-PIE file name not of the form SSS_SS_RR_CCC_II.png: {path}")
        if match["camera"] != camera.replace("_", ""):
            raise ValueError(f"Multi-PIE file {path} names camera {match['camera']} inside folder {camera}")
        entry = MultiPIEImage(path, int(match["subject"]), int(match["session"]), int(match["recording"]),
                              int(match["shot"]))
        if (entry.session, entry.recording) in wanted and entry.shot in shots:
            images.append(entry)
    if not images:
        raise FileNotFoundError(f"no Multi-PIE image for camera {camera}, recordings {sorted(wanted)} under {root} "
                                f"(expected session0S/multiview/<subject>/<recording>/{camera}/*.png)")
    return images


def center_crop_resize(image: np.ndarray, crop_size: int = CROP_SIZE, image_size: int = 128) -> np.ndarray:
    height, width = image.shape[:2]
    if height < crop_size or width < crop_size:
        raise ValueError(f"Multi-PIE image {width}x{height} is smaller than the {crop_size} centre crop")
    top, left = (height - crop_size) // 2, (width - crop_size) // 2
    crop = image[top:top + crop_size, left:left + crop_size]
    return cv2.resize(crop, (image_size, image_size), interpolation=cv2.INTER_AREA)


class MultiPIEDataset(Dataset):
    """-> {"image" (3,S,S) in [0,1], "label" (index of the shot in `shots`), "subject", "path"}."""

    def __init__(self, root: str | Path, camera: str = FRONTAL_CAMERA,
                 recordings: Sequence[Sequence[int]] = NEUTRAL_RECORDINGS, shots: Sequence[int] = DEFAULT_SHOTS,
                 crop_size: int = CROP_SIZE, image_size: int = 128, limit: int | None = None) -> None:
        self.shots = [int(s) for s in shots]
        self.images = scan_multipie(root, camera, recordings, self.shots)
        if limit is not None:
            self.images = self.images[:limit]
        self.crop_size, self.image_size = crop_size, image_size

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        entry = self.images[index]
        image = read_rgb(entry.path, "image file", pixels="unit_float")
        image = center_crop_resize(image, self.crop_size, self.image_size)
        return {"image": to_chw(image), "label": self.shots.index(entry.shot), "subject": entry.subject,
                "path": str(entry.path)}


# ------------------------------------------------------------------------------------------------ protocol
def hemisphere_normals(size: int = 32) -> torch.Tensor:
    """Unit normals of a front-facing hemisphere on a size x size grid, only the pixels inside the disk: (P,3)."""
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    x, y = xs, -ys
    inside = x * x + y * y < 1.0
    z = torch.sqrt(torch.clamp(1.0 - x * x - y * y, min=0.0))
    return torch.stack([x[inside], y[inside], z[inside]], dim=1)


def lighting_signature(lighting: torch.Tensor, sphere_size: int = 32) -> torch.Tensor:
    """(N,27) SH lighting -> (N,P) unit-length shading of a hemisphere under the grey (RGB-mean) lighting."""
    lighting = torch.as_tensor(lighting, dtype=torch.float64)
    if lighting.dim() != 2 or lighting.shape[1] != 3 * SH_COEFFICIENTS:
        raise ValueError(f"lighting must be (N,27), got {tuple(lighting.shape)}")
    grey = lighting.reshape(-1, 3, SH_COEFFICIENTS).mean(dim=1).repeat(1, 3)
    normals = hemisphere_normals(sphere_size).to(torch.float64)
    image = normals.T.reshape(1, 3, 1, -1).expand(grey.shape[0], 3, 1, normals.shape[0])
    shading = sh_shading(image, grey)[:, 0, 0, :]
    return shading / shading.norm(dim=1, keepdim=True).clamp_min(1e-12)


def lighting_class_scores(lighting, labels, subjects, class_count: int, sphere_size: int = 32) -> np.ndarray:
    """Leave-one-subject-out cosine scores (N, class_count) of each lighting against the class prototypes."""
    signatures = lighting_signature(torch.as_tensor(np.asarray(lighting)), sphere_size)
    labels = np.asarray(labels, dtype=np.int64)
    subjects = np.asarray(subjects)
    if not (len(labels) == len(subjects) == signatures.shape[0]):
        raise ValueError(f"lighting ({signatures.shape[0]}), labels ({len(labels)}) and subjects "
                         f"({len(subjects)}) differ in length")
    if labels.min() < 0 or labels.max() >= class_count:
        raise ValueError(f"labels must lie in [0, {class_count})")
    one_hot = torch.nn.functional.one_hot(torch.as_tensor(labels), class_count).to(torch.float64)  # (N,C)
    class_sums = one_hot.T @ signatures                                                           # (C,P)
    scores = np.zeros((len(labels), class_count))
    for subject in np.unique(subjects):
        own = torch.as_tensor(subjects == subject)
        prototypes = class_sums - one_hot[own].T @ signatures[own]
        empty = prototypes.norm(dim=1) == 0
        if empty.any():
            raise ValueError(f"lighting classes {torch.nonzero(empty).flatten().tolist()} have no image from a "
                             f"subject other than {subject}: cannot build leave-one-subject-out prototypes")
        prototypes = prototypes / prototypes.norm(dim=1, keepdim=True)
        scores[own.numpy()] = (signatures[own] @ prototypes.T).numpy()
    return scores


# ---------------------------------------------------------------------------------------------------- writer
def shot_lighting(shot: int, shot_count: int = 19) -> np.ndarray:
    """A distinct light for each fixture shot: ambient for shot 0, else a flash swept from left to right."""
    light = np.zeros(SH_COEFFICIENTS)
    light[0] = 0.9
    if shot > 0:
        azimuth = np.deg2rad(-80.0 + 160.0 * (shot - 1) / max(shot_count - 2, 1))
        elevation = np.deg2rad(15.0 if shot % 2 else -5.0)
        direction = np.array([np.sin(azimuth) * np.cos(elevation), np.sin(elevation),
                              np.cos(azimuth) * np.cos(elevation)])
        light[1:4] = 0.7 * np.array([direction[2], direction[0], direction[1]])
    return np.tile(light, 3).astype(np.float32)


def multipie_path(root: str | Path, subject: int, session: int, recording: int, shot: int,
                  camera: str = FRONTAL_CAMERA) -> Path:
    """`<root>/session<SS>/multiview/<subject>/<RR>/<camera>/<subject>_<SS>_<RR>_<camera digits>_<shot>.png`."""
    return (Path(root) / f"session{session:02d}" / "multiview" / f"{subject:03d}" / f"{recording:02d}" / camera
            / f"{subject:03d}_{session:02d}_{recording:02d}_{camera.replace('_', '')}_{shot:02d}.png")


def write_multipie_fixture(root: str | Path, subjects: Sequence[int] = (1, 2, 3),
                           recordings: Sequence[Sequence[int]] = ((1, 1),), shots: Sequence[int] = DEFAULT_SHOTS,
                           camera: str = FRONTAL_CAMERA, size: tuple[int, int] = (480, 640), seed: int = 0) -> Path:
    """Multi-PIE in its real tree: one 640x480 PNG per (subject, recording, shot), a procedural face lit by
    `shot_lighting(shot)` in the centre. Returns root (Multi-PIE's `data/` folder)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    face_size = 240
    normals, mask = ellipsoid_normals(face_size)
    normal_tensor = torch.from_numpy(normals).permute(2, 0, 1)[None]
    for subject in subjects:
        skin = rng.uniform([0.5, 0.35, 0.25], [0.85, 0.65, 0.55])
        for session, recording in recordings:
            for shot in shots:
                light = torch.from_numpy(shot_lighting(shot))[None]
                shading = sh_shading(normal_tensor, light)[0].permute(1, 2, 0).numpy()
                face = np.clip(shading * skin, 0.0, 1.0) * mask[..., None]
                image = np.full((*size, 3), 0.2, dtype=np.float32)
                top, left = (size[0] - face_size) // 2, (size[1] - face_size) // 2
                region = image[top:top + face_size, left:left + face_size]
                image[top:top + face_size, left:left + face_size] = face + region * (1.0 - mask[..., None])
                write_png(multipie_path(root, subject, session, recording, shot, camera), image)
    return root
