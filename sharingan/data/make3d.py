"""Make3D Test134, evaluation only (Table 2.2 / 2.6; docs/ref-sharingan.md §3.3, docs/formats.md §5).

Layout: `<root>/Test134/img-<stem>.jpg` and `<root>/Gridlaserdata/depth_sph_corr-<stem>.mat` (MATLAB v5, key
`Position3DGrid` of shape (55, 305, 4), channel 3 = depth in metres). Pairs are built from the stem (never by
replacing substrings of the absolute path).

Official protocol: image resized to (H 2000, W 1800), centre-cropped to (1024, 1600), resized to the network
size (both resizes Pillow bilinear, anti-aliased: the second shrinks ~5x vertically); ground truth resized
to (2000, 1800) with OpenCV's nearest neighbour (as the official code) and centre-cropped the same way; the
prediction is upsampled bilinearly to 1024x1600; errors for 0 < gt < 70 m ("C1").
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import scipy.io
from torch.utils.data import Dataset

from common.images import read_rgb
from sharingan.data.images import resize, to_network, write_rgb

LAYOUT = "<root>/Test134/img-<stem>.jpg + <root>/Gridlaserdata/depth_sph_corr-<stem>.mat (Position3DGrid)"
RESIZE_HW = (2000, 1800)
CROP_HW = (1024, 1600)


def read_make3d_depth(path: str | Path) -> np.ndarray:
    """(55, 305) float64 depth in metres from a `depth_sph_corr-*.mat` file (channel 3 of Position3DGrid)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Make3D depth file not found: {path} (expected layout {LAYOUT})")
    try:
        content = scipy.io.loadmat(str(path))
    except NotImplementedError as error:  # MATLAB v7.3 (HDF5)
        raise ValueError(f"{path} is a MATLAB v7.3 (HDF5) file; Make3D ground truth is MATLAB v5 "
                         f"(re-save it with -v7 or read it with h5py): {error}") from error
    except (ValueError, OSError, EOFError) as error:  # malformed or truncated
        raise ValueError(f"cannot read MATLAB file {path}: {error}") from error
    if "Position3DGrid" not in content:
        keys = sorted(k for k in content if not k.startswith("__"))
        raise KeyError(f"{path} has no 'Position3DGrid' variable (found {keys})")
    grid = np.asarray(content["Position3DGrid"])
    if grid.ndim != 3 or grid.shape[2] < 4:
        raise ValueError(f"{path}: Position3DGrid must be (rows, cols, 4), got {grid.shape}")
    return grid[:, :, 3].astype(np.float64)


def write_make3d_mat(path: str | Path, depth: np.ndarray) -> Path:
    """Write a MATLAB v5 file with `Position3DGrid` (rows, cols, 4): channels x, y, z (placeholders) and depth."""
    depth = np.asarray(depth, dtype=np.float64)
    if depth.ndim != 2:
        raise ValueError(f"write_make3d_mat({path}): expected (rows, cols) depth, got {depth.shape}")
    grid = np.zeros(depth.shape + (4,), dtype=np.float64)
    grid[:, :, 2] = depth
    grid[:, :, 3] = depth
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(path), {"Position3DGrid": grid}, format="5")
    return path


def center_crop(array: np.ndarray, size: Sequence[int]) -> np.ndarray:
    height, width = array.shape[:2]
    top, left = (height - size[0]) // 2, (width - size[1]) // 2
    if top < 0 or left < 0:
        raise ValueError(f"cannot centre-crop {array.shape[:2]} to {tuple(size)}")
    return array[top:top + size[0], left:left + size[1]]


def list_make3d(root: str | Path) -> list[str]:
    """Stems of all `Test134/img-<stem>.jpg` that have a matching ground-truth file (missing GT is an error)."""
    root = Path(root)
    images = sorted((root / "Test134").glob("img-*.jpg"))
    if not images:
        raise FileNotFoundError(f"no Make3D test images under {root / 'Test134'} (expected layout {LAYOUT})")
    stems = [p.stem[len("img-"):] for p in images]
    missing = [s for s in stems if not (root / "Gridlaserdata" / f"depth_sph_corr-{s}.mat").is_file()]
    if missing:
        raise FileNotFoundError(f"Make3D ground truth missing for {len(missing)} images, e.g. "
                                f"{root / 'Gridlaserdata' / f'depth_sph_corr-{missing[0]}.mat'}")
    return stems


class Make3DDataset(Dataset):
    """{"image": (3, H, W) in [-1, 1] after the official resize/crop, "gt": (1024, 1600) metres, "path"}."""

    def __init__(self, root: str | Path, size: Sequence[int] = (192, 640), resize_hw: Sequence[int] = RESIZE_HW,
                 crop_hw: Sequence[int] = CROP_HW) -> None:
        self.root = Path(root)
        self.stems = list_make3d(self.root)
        self.size = (int(size[0]), int(size[1]))
        self.resize_hw, self.crop_hw = tuple(resize_hw), tuple(crop_hw)

    def __len__(self) -> int:
        return len(self.stems)

    def __getitem__(self, index: int) -> dict:
        stem = self.stems[index]
        image = read_rgb(self.root / "Test134" / f"img-{stem}.jpg", "Make3D image")
        image = center_crop(resize(image, self.resize_hw, "bilinear"), self.crop_hw)  # Pillow, as official
        depth = read_make3d_depth(self.root / "Gridlaserdata" / f"depth_sph_corr-{stem}.mat")
        # the official ground truth goes through OpenCV's nearest neighbour (not Pillow's)
        depth = center_crop(cv2.resize(depth, self.resize_hw[::-1], interpolation=cv2.INTER_NEAREST), self.crop_hw)
        return {"image": to_network(resize(image, self.size, "bilinear")), "gt": depth,
                "path": f"Test134/img-{stem}.jpg"}


def write_make3d_fixture(root: str | Path, stems: Sequence[str] = ("10.21op2-p-015t000", "op1-p-108t000"),
                         image_hw: tuple[int, int] = (32, 24), seed: int = 0) -> list[str]:
    """Tiny Make3D: portrait JPEGs and v5 .mat files with a (55, 305, 4) Position3DGrid (depth 2..80 m)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for index, stem in enumerate(stems):
        write_rgb(root / "Test134" / f"img-{stem}.jpg", rng.integers(0, 256, image_hw + (3,), dtype=np.uint8))
        depth = np.linspace(2.0, 80.0, 55)[:, None] * np.ones((1, 305)) + index
        write_make3d_mat(root / "Gridlaserdata" / f"depth_sph_corr-{stem}.mat", depth)
    return list(stems)
