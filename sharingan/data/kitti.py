"""KITTI raw, the real domain of the depth experiments (docs/ref-sharingan.md §3.1, docs/formats.md §2).

Layout under the data root:
    <date>/calib_cam_to_cam.txt, <date>/calib_velo_to_cam.txt
    <date>/<drive>_sync/image_02/data/<frame>.png (left), image_03/data/<frame>.png (right)
    <date>/<drive>_sync/velodyne_points/data/<frame>.bin (float32 x, y, z, reflectance)
List files: SharinGAN's 4 fields `left.png right.png <date> velodyne.bin`, or monodepth2's 3 fields
`<date>/<drive>_sync <frame> l|r` (turned into the same stereo entry, left view as reference).

Stereo training samples carry f·B (focal length x baseline, pixel·metre) from `calib_cam_to_cam.txt`, scaled
to the network width. Augmentation (official, training only): horizontal flip p = 0.5 as *swap and mirror*
(new left = mirrored right, so f·B stays positive and the geometry valid), rotation U(-5°, 5°) p = 0.5 applied
to both views, colour jitter p = 0.5 (brightness, contrast, saturation ~U(0.8, 1)) shared by both views.

Ground truth for evaluation: `generate_depth_map` projects the velodyne scan into camera 2 (monodepth2's
procedure, depth = forward distance x of the point); unlike the official SharinGAN helper it does not subtract
1 m from every depth.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from common.images import read_rgb
from common.safe_pickle import load_npz
from sharingan.data.images import colour_jitter, resize, rotate, to_network, write_rgb

LAYOUT = ("<root>/<date>/calib_cam_to_cam.txt, calib_velo_to_cam.txt; <root>/<date>/<drive>_sync/"
          "image_02|image_03/data/<frame>.png; velodyne_points/data/<frame>.bin")


# ----------------------------------------------------------------------------------------------------------
# Calibration and velodyne
# ----------------------------------------------------------------------------------------------------------


def read_calib_file(path: str | Path) -> dict[str, np.ndarray | str]:
    """`key: values` lines -> {key: float array} (non-numeric values, e.g. calib_time, kept as strings).

    Each line is split on its *first* colon only (`calib_time: 09-Jan-2012 13:57:47` has three).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"KITTI calibration file not found: {path} (expected layout {LAYOUT})")
    data: dict[str, np.ndarray | str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        if ":" not in line:
            raise ValueError(f"{path}:{number}: expected 'key: values', got {line!r}")
        key, value = line.split(":", 1)
        try:
            data[key.strip()] = np.array([float(v) for v in value.split()], dtype=np.float64)
        except ValueError:
            data[key.strip()] = value.strip()
    return data


def _calib_entry(calib: dict, key: str, size: int, path: Path) -> np.ndarray:
    value = calib.get(key)
    if not isinstance(value, np.ndarray) or value.size != size:
        raise ValueError(f"{path}: key {key!r} missing or not {size} numbers")
    return value


def focal_baseline(calib_dir: str | Path, cam: int = 2) -> tuple[float, int]:
    """(f·B in pixel·metre at the original resolution, original image width) from calib_cam_to_cam.txt.

    f = P_rect_0c[0, 0]; each camera's offset b = P[0, 3] / -P[0, 0]; baseline = b_3 - b_2 (≈ 0.54 m).
    """
    path = Path(calib_dir) / "calib_cam_to_cam.txt"
    calib = read_calib_file(path)
    left = _calib_entry(calib, f"P_rect_0{cam}", 12, path).reshape(3, 4)
    right = _calib_entry(calib, f"P_rect_0{cam + 1}", 12, path).reshape(3, 4)
    baseline = right[0, 3] / -right[0, 0] - left[0, 3] / -left[0, 0]
    width = int(_calib_entry(calib, f"S_rect_0{cam}", 2, path)[0])
    if baseline <= 0:
        raise ValueError(f"{path}: non-positive stereo baseline {baseline} from P_rect_0{cam}/P_rect_0{cam + 1}")
    return float(left[0, 0] * baseline), width


def load_velodyne_points(path: str | Path) -> np.ndarray:
    """A velodyne `.bin` (little-endian float32, N x 4: x forward, y left, z up [m], reflectance)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"velodyne scan not found: {path} (expected layout {LAYOUT})")
    size = path.stat().st_size
    if size % 16:
        raise ValueError(f"velodyne file {path} has {size} bytes, not a multiple of 16 (N x 4 float32)")
    return np.fromfile(path, dtype="<f4").reshape(-1, 4)


def write_velodyne_bin(path: str | Path, points: np.ndarray) -> Path:
    """Write (N, 3) or (N, 4) points as little-endian float32 N x 4 (reflectance 0 when absent)."""
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] not in (3, 4):
        raise ValueError(f"write_velodyne_bin({path}): expected (N, 3|4) points, got {points.shape}")
    if points.shape[1] == 3:
        points = np.concatenate([points, np.zeros((len(points), 1))], 1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    points.astype("<f4").tofile(path)
    return path


def generate_depth_map(calib_dir: str | Path, velo_path: str | Path, cam: int = 2) -> np.ndarray:
    """Sparse (H, W) depth in metres of camera `cam` from a velodyne scan; 0 where no point falls.

    Projection P_rect_0c · R_rect_00 · [R|T]_velo->cam; only points in front of the scanner (x >= 0); pixel
    = round(u) - 1, round(v) - 1 (KITTI's 1-based convention, as monodepth2); depth = the point's forward
    distance x (vel_depth); when several points hit one pixel the nearest wins. Size from S_rect_02.
    """
    calib_dir = Path(calib_dir)
    cam_path, velo_path_calib = calib_dir / "calib_cam_to_cam.txt", calib_dir / "calib_velo_to_cam.txt"
    cam_to_cam = read_calib_file(cam_path)
    velo_to_cam = read_calib_file(velo_path_calib)
    rotation = _calib_entry(velo_to_cam, "R", 9, velo_path_calib).reshape(3, 3)
    translation = _calib_entry(velo_to_cam, "T", 3, velo_path_calib).reshape(3, 1)
    velo_to_camera = np.vstack([np.hstack([rotation, translation]), [0.0, 0.0, 0.0, 1.0]])
    width, height = (int(v) for v in _calib_entry(cam_to_cam, "S_rect_02", 2, cam_path))
    rectify = np.eye(4)
    rectify[:3, :3] = _calib_entry(cam_to_cam, "R_rect_00", 9, cam_path).reshape(3, 3)
    projection = _calib_entry(cam_to_cam, f"P_rect_0{cam}", 12, cam_path).reshape(3, 4)
    velo_to_image = projection @ rectify @ velo_to_camera

    points = load_velodyne_points(velo_path).astype(np.float64)
    points = points[points[:, 0] >= 0]
    homogeneous = np.concatenate([points[:, :3], np.ones((len(points), 1))], 1)
    image_points = homogeneous @ velo_to_image.T
    in_front = image_points[:, 2] > 0
    image_points, points = image_points[in_front], points[in_front]
    u = np.round(image_points[:, 0] / image_points[:, 2]).astype(np.int64) - 1
    v = np.round(image_points[:, 1] / image_points[:, 2]).astype(np.int64) - 1
    depth_values = points[:, 0]
    inside = (u >= 0) & (v >= 0) & (u < width) & (v < height)
    u, v, depth_values = u[inside], v[inside], depth_values[inside]
    depth = np.full((height, width), np.inf)
    np.minimum.at(depth, (v, u), depth_values)
    depth[np.isinf(depth)] = 0.0
    return depth


def write_calib_files(date_dir: str | Path, focal: float = 721.5377, cx: float = 609.5593, cy: float = 172.854,
                      baseline: float = 0.5327, image_size: tuple[int, int] = (375, 1242),
                      velo_rotation: np.ndarray | None = None, velo_translation: Sequence[float] = (0.0, 0.0, 0.0),
                      left_offset: float = 0.06) -> tuple[Path, Path]:
    """Write `calib_cam_to_cam.txt` and `calib_velo_to_cam.txt` in KITTI's format (incl. calib_time and
    corner_dist lines). Rectified cameras share `focal`, (cx, cy); camera 2 sits `left_offset` m left of
    camera 0 and camera 3 `baseline` m to the right of camera 2 (P[0, 3] = -f·b). The default velodyne
    rotation maps velodyne (x fwd, y left, z up) to camera (x right, y down, z fwd)."""
    date_dir = Path(date_dir)
    date_dir.mkdir(parents=True, exist_ok=True)
    height, width = int(image_size[0]), int(image_size[1])

    def fmt(values) -> str:
        return " ".join(f"{float(v):e}" for v in np.asarray(values, dtype=np.float64).ravel())

    offsets = {0: 0.0, 1: -0.54, 2: left_offset, 3: left_offset - baseline}
    lines = ["calib_time: 09-Jan-2012 13:57:47", "corner_dist: 9.950000e-02"]
    for index in range(4):
        intrinsics = np.array([[focal, 0, cx], [0, focal, cy], [0, 0, 1]])
        projection = np.hstack([intrinsics, [[focal * offsets[index]], [0.0], [0.0]]])
        lines += [f"S_{index:02d}: {fmt([width + 150, height + 137])}", f"K_{index:02d}: {fmt(intrinsics)}",
                  f"D_{index:02d}: {fmt(np.zeros(5))}", f"R_{index:02d}: {fmt(np.eye(3))}",
                  f"T_{index:02d}: {fmt([offsets[index], 0, 0])}", f"S_rect_{index:02d}: {fmt([width, height])}",
                  f"R_rect_{index:02d}: {fmt(np.eye(3))}", f"P_rect_{index:02d}: {fmt(projection)}"]
    cam_path = date_dir / "calib_cam_to_cam.txt"
    cam_path.write_text("\n".join(lines) + "\n")
    rotation = np.array([[0, -1, 0], [0, 0, -1], [1, 0, 0]], dtype=np.float64) if velo_rotation is None \
        else np.asarray(velo_rotation, dtype=np.float64)
    velo_path = date_dir / "calib_velo_to_cam.txt"
    velo_path.write_text(f"calib_time: 15-Mar-2012 11:37:16\nR: {fmt(rotation)}\nT: {fmt(velo_translation)}\n"
                         f"delta_f: {fmt([0, 0])}\ndelta_c: {fmt([0, 0])}\n")
    return cam_path, velo_path


# ----------------------------------------------------------------------------------------------------------
# Lists and datasets
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KittiEntry:
    left: str
    right: str
    calib_dir: str
    velodyne: str


def read_kitti_list(path: str | Path) -> list[KittiEntry]:
    """Parse a SharinGAN 4-field list or a monodepth2 3-field list (duplicate frames kept once)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"KITTI list file not found: {path} (lines 'left.png right.png <date> "
                                "velodyne.bin' or '<date>/<drive>_sync <frame> l|r')")
    entries, seen = [], set()
    for number, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) == 4:
            entry = KittiEntry(*fields)
        elif len(fields) == 3 and fields[2] in ("l", "r"):
            folder, frame = fields[0], f"{int(fields[1]):010d}"
            entry = KittiEntry(f"{folder}/image_02/data/{frame}.png", f"{folder}/image_03/data/{frame}.png",
                               folder.split("/")[0], f"{folder}/velodyne_points/data/{frame}.bin")
        else:
            raise ValueError(f"{path}:{number}: expected 4 fields 'left right calib_dir velodyne' or 3 fields "
                             f"'folder frame l|r', got {line!r}")
        if entry not in seen:
            seen.add(entry)
            entries.append(entry)
    if not entries:
        raise ValueError(f"KITTI list {path} is empty")
    return entries


def write_kitti_list(path: str | Path, entries: Sequence[KittiEntry]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{e.left} {e.right} {e.calib_dir} {e.velodyne}\n" for e in entries))
    return path


def stereo_flip(left: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Horizontal flip of a rectified pair that keeps it a valid left/right pair: swap and mirror.

    Mirroring turns the right camera into a camera on the left, so the new left view is the mirrored right
    image and vice versa; disparities stay positive and f·B unchanged.
    """
    return np.ascontiguousarray(right[:, ::-1]), np.ascontiguousarray(left[:, ::-1])


class KittiStereoDataset(Dataset):
    """Real training samples {"image": left, "right": right (both (3, H, W) in [-1, 1]),
    "focal_baseline": f·B at the network width (pixel·metre), "path": left path}."""

    def __init__(self, root: str | Path, entries: Sequence[KittiEntry], size: Sequence[int] = (192, 640),
                 augment: bool = False, rotation_degrees: float = 5.0) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"KITTI root not found: {self.root} (expected layout {LAYOUT})")
        self.entries = list(entries)
        self.size = (int(size[0]), int(size[1]))
        self.augment, self.rotation_degrees = augment, rotation_degrees
        self._focal_baseline: dict[str, tuple[float, int]] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def focal_baseline(self, calib_dir: str) -> float:
        """f·B scaled from the original width to the network width."""
        if calib_dir not in self._focal_baseline:
            self._focal_baseline[calib_dir] = focal_baseline(self.root / calib_dir)
        value, width = self._focal_baseline[calib_dir]
        return value * self.size[1] / width

    def __getitem__(self, index: int) -> dict:
        entry = self.entries[index]
        left = read_rgb(self.root / entry.left, "KITTI left image")
        right = read_rgb(self.root / entry.right, "KITTI right image")
        if left.shape != right.shape:
            raise ValueError(f"KITTI stereo pair differs in size: {self.root / entry.left} is {left.shape[:2]}, "
                             f"{self.root / entry.right} is {right.shape[:2]}")
        left, right = resize(left, self.size, "bicubic"), resize(right, self.size, "bicubic")  # Pillow, official
        if self.augment:
            rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, ()).item()))
            if rng.random() < 0.5:
                left, right = stereo_flip(left, right)
            if self.rotation_degrees > 0 and rng.random() < 0.5:
                angle = rng.uniform(-self.rotation_degrees, self.rotation_degrees)
                left, right = rotate(left, angle, cv2.INTER_CUBIC), rotate(right, angle, cv2.INTER_CUBIC)
            if rng.random() < 0.5:
                left, right = colour_jitter([left, right], rng)
        return {"image": to_network(left), "right": to_network(right),
                "focal_baseline": torch.tensor(self.focal_baseline(entry.calib_dir), dtype=torch.float32),
                "path": entry.left}


class KittiDepthEvalDataset(Dataset):
    """Evaluation samples {"image": (3, H, W) in [-1, 1], "gt": (H0, W0) float64 metres, "path"}.

    Ground truth: velodyne projected with `generate_depth_map`, or, when `gt_file` is given, a monodepth2
    style `gt_depths.npz` (key "data", an object array of per-image maps in list order), read with
    `common.safe_pickle.load_npz`: numpy's array reconstruction only, so a hostile file cannot run code."""

    def __init__(self, root: str | Path, entries: Sequence[KittiEntry], size: Sequence[int] = (192, 640),
                 gt_file: str | Path | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"KITTI root not found: {self.root} (expected layout {LAYOUT})")
        self.entries = list(entries)
        self.size = (int(size[0]), int(size[1]))
        self.gt = None
        if gt_file:
            gt_file = Path(gt_file)
            if not gt_file.is_file():
                raise FileNotFoundError(f"KITTI ground-truth file not found: {gt_file}")
            arrays = load_npz(gt_file)  # object arrays through a restricted unpickler: a hostile file runs nothing
            if "data" not in arrays:
                raise KeyError(f"{gt_file} has no 'data' array (found {sorted(arrays)}); expected monodepth2's "
                               "gt_depths.npz layout")
            self.gt = arrays["data"]
            if len(self.gt) != len(self.entries):
                raise ValueError(f"{gt_file} holds {len(self.gt)} depth maps but the list has {len(self.entries)}")

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> dict:
        entry = self.entries[index]
        image = read_rgb(self.root / entry.left, "KITTI image")
        if self.gt is not None:
            gt = np.asarray(self.gt[index], dtype=np.float64)
        else:
            gt = generate_depth_map(self.root / entry.calib_dir, self.root / entry.velodyne, cam=2)
        return {"image": to_network(resize(image, self.size, "bicubic")), "gt": gt, "path": entry.left}


def write_kitti_fixture(root: str | Path, frames: int = 3, image_size: tuple[int, int] = (48, 160),
                        date: str = "2011_09_26", drive: str = "2011_09_26_drive_0002_sync",
                        missing_velodyne: Sequence[int] = (), points_per_frame: int = 4000, seed: int = 0,
                        focal: float | None = None, baseline: float = 0.54) -> list[KittiEntry]:
    """Write a tiny KITTI raw dataset in the real layout: calib files, stereo PNGs, velodyne scans.

    The scans hold points 2..60 m ahead inside the camera frustum; frames listed in `missing_velodyne`
    get no `.bin` (as some real frames). Returns the 4-field list entries."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    height, width = int(image_size[0]), int(image_size[1])
    focal = float(focal if focal is not None else width * 0.58)
    write_calib_files(root / date, focal=focal, cx=width / 2.0, cy=height / 2.0, baseline=baseline,
                      image_size=(height, width))
    entries = []
    for frame in range(frames):
        name = f"{frame:010d}"
        folder = f"{date}/{drive}"
        entry = KittiEntry(f"{folder}/image_02/data/{name}.png", f"{folder}/image_03/data/{name}.png", date,
                           f"{folder}/velodyne_points/data/{name}.bin")
        write_rgb(root / entry.left, rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        write_rgb(root / entry.right, rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        if frame not in missing_velodyne:
            forward = rng.uniform(2.0, 60.0, points_per_frame)
            lateral = rng.uniform(-0.8, 0.8, points_per_frame) * forward * width / (2 * focal)
            vertical = rng.uniform(-0.8, 0.8, points_per_frame) * forward * height / (2 * focal)
            write_velodyne_bin(root / entry.velodyne,
                               np.stack([forward, -lateral, -vertical, rng.uniform(0, 1, points_per_frame)], 1))
        entries.append(entry)
    return entries
