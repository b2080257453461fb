"""Virtual KITTI, the synthetic domain of the depth experiments (docs/ref-sharingan.md §3.2, docs/formats.md §3-4).

vKITTI 1.3.1 (what SharinGAN used): list lines `vkitti_1.3.1_rgb/0001/15-deg-left/00000.png` relative to the
data root; the depth map is the same path under `vkitti_1.3.1_depthgt/`: a 16-bit grey PNG in centimetres,
65535 = sky/far. vKITTI 2: `vkitti_2.0.3_rgb/SceneXX/<variation>/frames/rgb/Camera_0/rgb_%05d.jpg` with depth
`vkitti_2.0.3_depth/SceneXX/<variation>/frames/depth/Camera_0/depth_%05d.png` (same encoding).

Depth is read as uint16 (cv2.IMREAD_UNCHANGED; never through a 16-bit -> int16 conversion that wraps 65535 to
-1), capped at 8000 cm and normalised to [-1, 1] (0..80 m). Deviation: we cap *before* the bicubic resize
(the official code resizes first), so the 655-m sky code cannot ring into neighbouring pixels. Image and depth
are resized with Pillow's anti-aliased bicubic filter as the official loader (depth as float, Pillow mode "F").
Training augmentation (official): horizontal flip p = 0.5; rotation U(-5°, 5°) p = 0.5 (image bicubic, depth
bilinear, corners filled with 0 = label -1, not masked).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from common.images import read_rgb
from sharingan.data.images import resize, rotate, to_network, write_rgb

DEPTH_CAP_CM = 8000.0
V1_RGB, V1_DEPTH = "vkitti_1.3.1_rgb", "vkitti_1.3.1_depthgt"
V2_RGB, V2_DEPTH = "vkitti_2.0.3_rgb", "vkitti_2.0.3_depth"
V1_LAYOUT = "<root>/vkitti_1.3.1_rgb/<world>/<variation>/<frame>.png + <root>/vkitti_1.3.1_depthgt/... (16-bit cm)"
V2_LAYOUT = ("<root>/vkitti_2.0.3_rgb/SceneXX/<variation>/frames/rgb/Camera_0/rgb_%05d.jpg + "
             "<root>/vkitti_2.0.3_depth/SceneXX/<variation>/frames/depth/Camera_0/depth_%05d.png (16-bit cm)")


def read_depth_png_cm(path: str | Path) -> np.ndarray:
    """A 16-bit grey PNG in centimetres -> (H, W) float32 cm, values intact (65535 stays 65535)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"vKITTI depth map not found: {path} (expected layout {V1_LAYOUT})")
    depth = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if depth is None:
        raise ValueError(f"cannot decode depth PNG {path}")
    if depth.dtype != np.uint16 or depth.ndim != 2:
        raise ValueError(f"depth PNG {path} must be single-channel 16-bit (centimetres), got {depth.dtype} "
                         f"with shape {depth.shape}")
    return depth.astype(np.float32)


def write_depth_png_cm(path: str | Path, depth_cm: np.ndarray) -> Path:
    """Write (H, W) centimetres as a 16-bit grey PNG (values rounded and clipped to 0..65535)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.clip(np.round(np.asarray(depth_cm, dtype=np.float64)), 0, 65535).astype(np.uint16)
    if array.ndim != 2:
        raise ValueError(f"write_depth_png_cm({path}): expected (H, W), got {array.shape}")
    if not cv2.imwrite(str(path), array):
        raise OSError(f"cannot write {path}")
    return path


def normalise_depth_cm(depth_cm: np.ndarray | torch.Tensor, cap_cm: float = DEPTH_CAP_CM):
    """Centimetres -> [-1, 1]: clamp to [0, cap] then d / cap · 2 - 1 (0..80 m)."""
    if isinstance(depth_cm, torch.Tensor):
        return depth_cm.clamp(0.0, cap_cm) / cap_cm * 2.0 - 1.0
    return np.clip(depth_cm, 0.0, cap_cm) / cap_cm * 2.0 - 1.0


def depth_path_for(rgb_relative: str) -> str:
    """The depth file of an RGB list entry (vKITTI 1.3.1 or 2), replacing only the layout's folder names."""
    parts = Path(rgb_relative).parts
    if not parts:
        raise ValueError("empty vKITTI list entry")
    if parts[0] == V1_RGB or parts[0].endswith("_rgb") and "frames" not in parts:
        return str(Path(parts[0][: -len("_rgb")] + "_depthgt", *parts[1:]))
    if "frames" in parts:  # vKITTI 2
        index = parts.index("frames")
        if len(parts) < index + 4 or parts[index + 1] != "rgb":
            raise ValueError(f"vKITTI 2 entry {rgb_relative!r} does not follow {V2_LAYOUT}")
        top = parts[0][: -len("_rgb")] + "_depth" if parts[0].endswith("_rgb") else parts[0]
        name = Path(parts[-1]).stem.replace("rgb_", "depth_") + ".png"
        return str(Path(top, *parts[1:index + 1], "depth", *parts[index + 2:-1], name))
    raise ValueError(f"vKITTI list entry {rgb_relative!r} matches neither layout: {V1_LAYOUT} | {V2_LAYOUT}")


def read_vkitti_list(path: str | Path) -> list[str]:
    """One RGB path (relative to the data root) per line; blank lines ignored."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"vKITTI list file not found: {path} (one line per image, e.g. "
                                f"'{V1_RGB}/0001/clone/00000.png')")
    entries = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        fields = line.split()
        if not fields[0].lower().endswith((".png", ".jpg")):
            raise ValueError(f"{path}:{number}: expected an image path, got {line!r}")
        entries.append(fields[0])
    if not entries:
        raise ValueError(f"vKITTI list {path} is empty")
    return entries


def scan_vkitti2(root: str | Path, camera: str = "Camera_0") -> list[str]:
    """All vKITTI 2 RGB frames of one camera under `root` (no official split exists), sorted."""
    root = Path(root)
    found = sorted(str(p.relative_to(root)) for p in root.glob(f"{V2_RGB}/*/*/frames/rgb/{camera}/rgb_*.jpg"))
    if not found:
        raise FileNotFoundError(f"no vKITTI 2 frames under {root} (expected {V2_LAYOUT})")
    return found


class VirtualKittiDataset(Dataset):
    """Synthetic samples {"image": (3, H, W) in [-1, 1], "depth": (1, H, W) in [-1, 1], "path": str}."""

    def __init__(self, root: str | Path, entries: Sequence[str], size: Sequence[int] = (192, 640),
                 augment: bool = False, cap_cm: float = DEPTH_CAP_CM, rotation_degrees: float = 5.0) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"vKITTI root not found: {self.root} (expected layout {V1_LAYOUT})")
        self.entries = list(entries)
        self.size = (int(size[0]), int(size[1]))
        self.augment, self.cap_cm, self.rotation_degrees = augment, cap_cm, rotation_degrees

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> dict:
        entry = self.entries[index]
        image = read_rgb(self.root / entry, "vKITTI image")
        depth_cm = np.clip(read_depth_png_cm(self.root / depth_path_for(entry)), 0.0, self.cap_cm)
        if image.shape[:2] != depth_cm.shape[:2]:
            raise ValueError(f"vKITTI image {self.root / entry} is {image.shape[:2]} but its depth map "
                             f"{self.root / depth_path_for(entry)} is {depth_cm.shape[:2]}; they must match")
        image = resize(image, self.size, "bicubic")  # Pillow, anti-aliased, as the official loader
        depth_cm = np.clip(resize(depth_cm, self.size, "bicubic"), 0.0, self.cap_cm)  # Pillow mode "F"
        if self.augment:
            rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, ()).item()))
            if rng.random() < 0.5:
                image, depth_cm = image[:, ::-1], depth_cm[:, ::-1]
            if self.rotation_degrees > 0 and rng.random() < 0.5:
                angle = rng.uniform(-self.rotation_degrees, self.rotation_degrees)
                image = rotate(np.ascontiguousarray(image), angle, cv2.INTER_CUBIC)
                depth_cm = rotate(np.ascontiguousarray(depth_cm), angle, cv2.INTER_LINEAR)
        depth = normalise_depth_cm(np.ascontiguousarray(depth_cm), self.cap_cm).astype(np.float32)
        return {"image": to_network(image), "depth": torch.from_numpy(depth)[None], "path": entry}


def write_vkitti_fixture(root: str | Path, worlds: Sequence[str] = ("0001",),
                         variations: Sequence[str] = ("clone", "fog"), frames: int = 2,
                         size: Sequence[int] = (24, 80), version: int = 1, seed: int = 0) -> list[str]:
    """Write a tiny Virtual KITTI in the real layout; returns the RGB entries (relative to `root`).

    Depth is a smooth ramp in centimetres with the format's special values planted: one pixel 65535 (sky),
    one > 32767 (would wrap in an int16 reader), one 0.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    height, width = int(size[0]), int(size[1])
    entries = []
    for world_index, world in enumerate(worlds):
        for variation in variations:
            for frame in range(frames):
                image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
                rows = np.linspace(6000, 500, height)[:, None] * np.ones((1, width))
                depth = rows + 37.0 * frame + 11.0 * world_index
                depth[0, 0], depth[0, 1], depth[-1, -1] = 65535, 40000, 0
                if version == 1:
                    entry = f"{V1_RGB}/{world}/{variation}/{frame:05d}.png"
                else:
                    entry = f"{V2_RGB}/Scene{world[-2:]}/{variation}/frames/rgb/Camera_0/rgb_{frame:05d}.jpg"
                write_rgb(root / entry, image)
                write_depth_png_cm(root / depth_path_for(entry), depth)
                entries.append(entry)
    return entries


def write_vkitti_list(path: str | Path, entries: Sequence[str]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{entry}\n" for entry in entries))
    return path
