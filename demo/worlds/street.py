"""The depth world: procedural street scenes ray-cast analytically with exact depth (dissertation §2.3.1).

One scene generator, three renderers, standing in for the three depth datasets of Chapter 2:

- ``synthetic``: flat colours, one sun, no shadows, aliased (clean) edges. Written in the Virtual KITTI 1.3.1
  layout (RGB PNG + 16-bit depth PNG in centimetres, sky = 65535).
- ``real``: procedural textures (asphalt, facades with windows, bark, clouds), another sun with cast shadows
  and a specular car paint, 2x2 supersampled (soft edges), then a camera: colour cast, vignetting, blur,
  gamma and sensor noise. Written in the KITTI raw layout: a stereo pair (image_02 / image_03), the
  calibration files, and sparse Velodyne-like point clouds (64 beams ray-cast from the laser's own origin)
  from which the ground truth depth is made, as for the real KITTI Eigen split.
- ``make3d``: a campus-like scene (grass, trees, buildings, no cars) seen by a portrait camera under an
  overcast sky; written as Make3D JPEGs + ``Position3DGrid`` (55 x 305 x 4) laser grids.

The renderers only produce arrays; files are written by the chapter-2 fixture writers
(``sharingan.data.vkitti`` / ``kitti`` / ``make3d``), so the demo and the tests exercise one set of writers.
Coordinates: rectified camera 0 of KITTI (x right, y down, z forward), ground plane y = camera height.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from demo.worlds.noise import box_downsample, sensor, to_uint8, value_noise
from demo.worlds.raycast import camera_rays, raycast

SKY = np.inf
# KITTI-like stereo rig (docs/formats.md §2): camera 2 slightly left of camera 0, camera 3 ~0.54 m right.
CAM2_X, CAM3_X = -0.06, 0.4732
# Velodyne -> camera: x forward -> z, y left -> -x, z up -> -y; the laser sits 8 cm above, 27 cm behind.
VELO_R = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
VELO_T = np.array([0.0, -0.08, -0.27])


@dataclass(frozen=True)
class Camera:
    """A pinhole camera of `height` x `width` pixels (focal lengths scaled from KITTI's 721 px at 1242)."""

    height: int
    width: int
    fx: float
    fy: float
    cx: float
    cy: float

    @classmethod
    def kitti_like(cls, height: int, width: int) -> Camera:
        f = 721.5377 * width / 1242.0
        return cls(height, width, f, f, width / 2.0 - 0.5, height * 0.46)

    @classmethod
    def make3d_like(cls, height: int, width: int) -> Camera:
        f = 0.9 * height
        return cls(height, width, f, f, width / 2.0 - 0.5, height * 0.5)

    @property
    def K(self) -> np.ndarray:
        return np.array([[self.fx, 0, self.cx], [0, self.fy, self.cy], [0, 0, 1.0]])


# ----------------------------------------------------------------------------------------------------------
# Scenes

def sample_street(rng: np.random.Generator, length: float = 160.0) -> dict:
    """A straight street: road, sidewalks, building rows, parked/driving cars, poles and trees."""
    cam_h = rng.uniform(1.5, 1.8)
    road = rng.uniform(3.5, 5.5)  # half width
    boxes, box_class, box_color = [], [], []
    for side in (-1, 1):
        z = rng.uniform(-10, 5)
        while z < length:
            depth_along = rng.uniform(8, 25)
            if rng.random() < 0.8:
                near = road + rng.uniform(2.5, 6)
                far = near + rng.uniform(6, 14)
                top = cam_h - rng.uniform(5, 18)
                x0, x1 = (near, far) if side > 0 else (-far, -near)
                boxes.append((x0, x1, top, cam_h, z, z + depth_along))
                box_class.append("building")
                box_color.append(rng.uniform([0.35, 0.25, 0.2], [0.85, 0.75, 0.65]))
            z += depth_along + rng.uniform(0, 6)
    for _ in range(rng.integers(4, 12)):
        lane = rng.choice([-1, 1]) * rng.uniform(road * 0.25, road - 1.0)
        zc = rng.uniform(4, length)
        boxes.append((lane - 0.9, lane + 0.9, cam_h - rng.uniform(1.3, 1.7), cam_h, zc, zc + rng.uniform(3.8, 4.6)))
        box_class.append("car")
        box_color.append(rng.uniform(0.05, 0.95, size=3))
    cylinders, cyl_class = [], []
    for _ in range(rng.integers(6, 16)):
        side = rng.choice([-1, 1])
        is_tree = rng.random() < 0.4
        x = side * (road + rng.uniform(0.4, 2.0))
        cylinders.append((x, rng.uniform(0, length), 0.25 if is_tree else 0.12, rng.uniform(3, 7)))
        cyl_class.append("trunk" if is_tree else "pole")
    return {"ground_y": cam_h, "road": road, "boxes": boxes, "box_class": box_class, "box_color": box_color,
            "cylinders": cylinders, "cyl_class": cyl_class, "kind": "street"}


def sample_campus(rng: np.random.Generator, length: float = 90.0) -> dict:
    """A Make3D-like outdoor scene: lawns, a footpath, trees with box crowns, a few buildings."""
    cam_h = rng.uniform(1.5, 1.7)
    boxes, box_class, box_color, cylinders, cyl_class = [], [], [], [], []
    for _ in range(rng.integers(2, 5)):
        x = rng.uniform(-40, 40)
        z = rng.uniform(15, length)
        w, d = rng.uniform(6, 20), rng.uniform(6, 15)
        boxes.append((x - w / 2, x + w / 2, cam_h - rng.uniform(6, 15), cam_h, z, z + d))
        box_class.append("building")
        box_color.append(rng.uniform([0.5, 0.4, 0.35], [0.9, 0.85, 0.8]))
    for _ in range(rng.integers(3, 9)):
        x, z = rng.uniform(-15, 15), rng.uniform(4, length * 0.6)
        trunk_h = rng.uniform(2, 4)
        cylinders.append((x, z, rng.uniform(0.15, 0.35), trunk_h))
        cyl_class.append("trunk")
        r = rng.uniform(1.2, 2.5)
        boxes.append((x - r, x + r, cam_h - trunk_h - 2 * r, cam_h - trunk_h + 0.2, z - r, z + r))
        box_class.append("crown")
        box_color.append(rng.uniform([0.1, 0.3, 0.05], [0.3, 0.55, 0.2]))
    return {"ground_y": cam_h, "road": rng.uniform(0.8, 1.5), "boxes": boxes, "box_class": box_class,
            "box_color": box_color, "cylinders": cylinders, "cyl_class": cyl_class, "kind": "campus"}


def cull(scene: dict, z_near: float, z_far: float) -> dict:
    """The scene without the objects entirely outside z_near..z_far (ray casting cost ~ object count)."""
    keep_b = [i for i, b in enumerate(scene["boxes"]) if b[5] > z_near and b[4] < z_far]
    keep_c = [i for i, c in enumerate(scene["cylinders"]) if z_near - 1 < c[1] < z_far + 1]
    out = dict(scene)
    for key in ("boxes", "box_class", "box_color"):
        out[key] = [scene[key][i] for i in keep_b]
    for key in ("cylinders", "cyl_class"):
        out[key] = [scene[key][i] for i in keep_c]
    return out


# ----------------------------------------------------------------------------------------------------------
# Shading

STYLES = {
    # sun = direction towards the light (camera coordinates, y down); sky = (zenith, horizon) colours
    "synthetic": {"sun": (0.4, -0.8, -0.45), "sun_rgb": (1.0, 1.0, 1.0), "ambient": 0.45,
                  "sky": ((0.45, 0.62, 0.9), (0.45, 0.62, 0.9)), "textures": False, "shadows": False,
                  "supersample": 1},
    "real": {"sun": (-0.55, -0.6, 0.35), "sun_rgb": (1.0, 0.9, 0.75), "ambient": 0.35,
             "sky": ((0.3, 0.5, 0.85), (0.85, 0.88, 0.92)), "textures": True, "shadows": True, "supersample": 2},
    "make3d": {"sun": (0.2, -0.9, 0.3), "sun_rgb": (0.85, 0.87, 0.9), "ambient": 0.55,
               "sky": ((0.7, 0.72, 0.78), (0.9, 0.9, 0.92)), "textures": True, "shadows": False,
               "supersample": 2},
}


def _lookup(values, index: np.ndarray) -> np.ndarray:
    """values[index] for the rays of one kind; the other rays' (meaningless) indices are clipped."""
    values = np.asarray(values)
    return values[np.clip(index, 0, len(values) - 1)]


def _albedo(scene: dict, hit: dict, textured: bool, seed: int) -> np.ndarray:
    kind, index, point = hit["kind"], hit["index"], np.nan_to_num(hit["point"])
    x, y, z = point[:, 0], point[:, 1], point[:, 2]
    n = kind.shape[0]
    albedo = np.zeros((n, 3))
    campus = scene["kind"] == "campus"
    # ground: road / path, sidewalk, grass
    ground = kind == 1
    ax = np.abs(x)
    road, side = ax < scene["road"], (ax >= scene["road"]) & (ax < scene["road"] + 2.5)
    grass_rgb = np.array([0.25, 0.45, 0.18])
    road_rgb = np.array([0.6, 0.55, 0.45]) if campus else np.array([0.32, 0.32, 0.34])
    ground_rgb = np.where(road[:, None], road_rgb, np.where(side[:, None] & (not campus), [0.55, 0.55, 0.52],
                                                             grass_rgb))
    if not campus:
        lane = road & (np.abs(x) < 0.1) & (np.mod(z, 8.0) < 4.0)
        ground_rgb = np.where(lane[:, None], [0.9, 0.9, 0.85], ground_rgb)
    if textured:
        grain = value_noise(x * 3.0, z * 3.0, seed) * 0.5 + value_noise(x * 0.3, z * 0.3, seed + 7) * 0.5
        ground_rgb = ground_rgb * (0.7 + 0.6 * grain[:, None])
    albedo = np.where(ground[:, None], ground_rgb, albedo)
    # boxes: buildings (facade windows when textured), cars, tree crowns
    boxes = kind == 2
    if boxes.any() and scene["boxes"]:
        colors = _lookup(scene["box_color"], index)
        classes = _lookup(scene["box_class"], index)
        rgb = colors.copy()
        if textured:
            u = np.where(np.abs(hit["normal"][:, 0]) > 0.5, z, x)
            windows = (classes == "building") & (np.mod(u, 3.0) > 1.0) & (np.mod(y, 3.2) > 1.2)
            rgb = np.where(windows[:, None], [0.15, 0.2, 0.3], rgb)
            glass = (classes == "car") & (y < scene["ground_y"] - 1.0)
            rgb = np.where(glass[:, None], [0.08, 0.1, 0.12], rgb)
            rgb = rgb * (0.8 + 0.4 * value_noise(u * 2.0, y * 2.0, seed + 3)[:, None])
        albedo = np.where(boxes[:, None], rgb, albedo)
    cyl = kind == 3
    if cyl.any() and scene["cylinders"]:
        classes = _lookup(scene["cyl_class"], index)
        rgb = np.where((classes == "trunk")[:, None], [0.35, 0.25, 0.15], [0.6, 0.6, 0.62])
        if textured:
            rgb = rgb * (0.75 + 0.5 * value_noise(y * 6.0, z * 6.0, seed + 5)[:, None])
        albedo = np.where(cyl[:, None], rgb, albedo)
    return np.clip(albedo, 0, 1)


def _sky(dirs: np.ndarray, style: dict, textured: bool, seed: int) -> np.ndarray:
    zenith, horizon = np.array(style["sky"][0]), np.array(style["sky"][1])
    elevation = np.clip(-dirs[:, 1] / np.linalg.norm(dirs, axis=1), 0, 1)[:, None]
    rgb = horizon + (zenith - horizon) * np.sqrt(elevation)
    if textured:
        clouds = value_noise(dirs[:, 0] / (dirs[:, 2] + 1e-3) * 4, elevation[:, 0] * 12, seed + 11, octaves=4)
        rgb = rgb + np.clip(clouds - 0.5, 0, 1)[:, None] * 0.8
    return rgb


# Virtual KITTI's variations change the light, not the geometry (same frames, same depth).
VARIATIONS = {"clone": {}, "morning": {"sun": (-0.8, -0.35, 0.3), "sun_rgb": (1.0, 0.85, 0.65), "ambient": 0.4},
              "overcast": {"sun": (0.0, -1.0, 0.0), "sun_rgb": (0.5, 0.5, 0.5), "ambient": 0.65}}


def style_of(name: str) -> dict:
    """``synthetic``, ``real``, ``make3d`` or ``synthetic:<variation>``."""
    base, _, variation = name.partition(":")
    return STYLES[base] | VARIATIONS.get(variation, {})


def shade(scene: dict, origin: np.ndarray, dirs: np.ndarray, style_name: str, seed: int = 0) -> tuple:
    """Ray-cast and shade; returns (linear rgb (N,3), z-depth (N,) with inf for sky, hit dict)."""
    style = style_of(style_name)
    hit = raycast(origin, dirs, scene)
    albedo = _albedo(scene, hit, style["textures"], seed)
    sun = np.asarray(style["sun"], dtype=np.float64)
    sun = sun / np.linalg.norm(sun)
    diffuse = np.clip(hit["normal"] @ sun, 0, None)
    if style["shadows"]:
        solid = np.isfinite(hit["t"])
        lit = np.zeros_like(diffuse)
        starts = hit["point"][solid] + hit["normal"][solid] * 1e-3
        blocked = np.isfinite(raycast(starts, np.broadcast_to(sun, starts.shape), scene)["t"])
        lit[solid] = np.where(blocked, 0.0, 1.0)
        diffuse = diffuse * lit
    rgb = albedo * (style["ambient"] + diffuse[:, None] * np.asarray(style["sun_rgb"]))
    if style["textures"]:  # specular car paint
        view = -dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
        half = view + sun
        half /= np.linalg.norm(half, axis=1, keepdims=True)
        spec = np.clip(np.sum(hit["normal"] * half, axis=1), 0, 1) ** 40
        is_car = (hit["kind"] == 2) & (_lookup(scene["box_class"] or ["none"], hit["index"]) == "car")
        rgb = rgb + (0.6 * spec * is_car)[:, None]
    sky = hit["kind"] == 0
    rgb = np.where(sky[:, None], _sky(dirs, style, style["textures"], seed), rgb)
    depth = np.where(sky, SKY, hit["t"] * dirs[:, 2])  # z-depth (dirs may not have unit z for lidar rays)
    return rgb, depth, hit


def render_view(scene: dict, camera: Camera, origin, style: str, rng: np.random.Generator,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Render one view; returns (HxWx3 uint8 image, HxW float z-depth in metres, inf = sky).

    The depth is that of the pixel-centre ray (exact); the supersampled image averages s x s sub-rays.
    """
    params = style_of(style)
    s = params["supersample"]
    dirs = camera_rays(camera.height, camera.width, camera.fx, camera.fy, camera.cx, camera.cy, s)
    rgb, _, _ = shade(scene, np.asarray(origin, float), dirs, style, seed)
    rgb = box_downsample(rgb.reshape(camera.height * s, camera.width * s, 3), s)
    centre = camera_rays(camera.height, camera.width, camera.fx, camera.fy, camera.cx, camera.cy, 1)
    depth = raycast(np.asarray(origin, float), centre, scene)["t"].reshape(camera.height, camera.width)
    if style.startswith("synthetic"):
        image = np.clip(rgb, 0, 1)
    elif style == "real":
        cast = rng.uniform([0.95, 0.9, 0.75], [1.1, 1.0, 0.9])
        image = sensor(rgb, rng, cast=cast, noise=0.03, blur=0.7, vignette=0.35, gamma=1.25)
    else:
        cast = rng.uniform([0.9, 0.95, 0.95], [1.0, 1.05, 1.1])
        image = sensor(rgb, rng, cast=cast, noise=0.02, blur=0.5, vignette=0.1, gamma=1.1)
    return to_uint8(image), np.where(np.isfinite(depth), depth, SKY)


# ----------------------------------------------------------------------------------------------------------
# Dataset-shaped samples (arrays only; the chapter-2 writers put them on disk)

def vkitti_depth_cm(depth_m: np.ndarray) -> np.ndarray:
    """Virtual KITTI 1.3.1 encoding: uint16 centimetres, sky / beyond range = 65535 (formats.md §3)."""
    cm = np.where(np.isfinite(depth_m), np.round(depth_m * 100.0), 65535)
    return np.clip(cm, 1, 65535).astype(np.uint16)


def velodyne_scan(scene: dict, origin_cam: np.ndarray, beams: int = 64, front_step_deg: float = 0.8,
                  back_step_deg: float = 4.0, max_range: float = 120.0) -> np.ndarray:
    """Sparse laser returns (N, 4) float32 in Velodyne coordinates (x fwd, y left, z up, reflectance).

    Beams span elevations +2 .. -24.8 degrees like an HDL-64E; azimuths are dense in front and sparse
    behind (points behind the camera must be dropped by the ground-truth projection, as in KITTI).
    """
    elevation = np.deg2rad(np.linspace(2.0, -24.8, beams))
    front = np.arange(-60.0, 60.0, front_step_deg)
    back = np.arange(60.0, 300.0, back_step_deg)
    azimuth = np.deg2rad(np.concatenate([front, back]))
    el, az = np.meshgrid(elevation, azimuth, indexing="ij")
    velo_dirs = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], -1).reshape(-1, 3)
    cam_dirs = velo_dirs @ VELO_R.T
    origin = origin_cam + VELO_T
    hit = raycast(origin, cam_dirs, scene)
    keep = np.isfinite(hit["t"]) & (hit["t"] < max_range)
    pts_cam = hit["point"][keep] - origin_cam  # relative to the moving camera 0 at this frame
    pts_velo = (pts_cam - VELO_T) @ VELO_R  # inverse of X_cam = R X_velo + T
    albedo = _albedo(scene, {k: v[keep] for k, v in hit.items()}, False, 0).mean(axis=1)
    return np.concatenate([pts_velo, albedo[:, None]], axis=1).astype(np.float32)


def kitti_calibration(camera: Camera) -> dict:
    """Arrays of the two KITTI calibration files for this rig (the writers format them)."""
    P2 = np.hstack([camera.K, np.array([[-camera.fx * CAM2_X], [0.0], [0.0]])])
    P3 = np.hstack([camera.K, np.array([[-camera.fx * CAM3_X], [0.0], [0.0]])])
    P0 = np.hstack([camera.K, np.zeros((3, 1))])
    return {"image_size": (camera.width, camera.height), "K": camera.K, "P_rect_00": P0, "P_rect_02": P2,
            "P_rect_03": P3, "R_rect_00": np.eye(3), "velo_R": VELO_R.copy(), "velo_T": VELO_T.copy(),
            "baseline": CAM3_X - CAM2_X}


def render_street_sequence(seed: int, n_frames: int, camera: Camera, style: str, step: float = 1.5,
                           stereo: bool = False, lidar: bool = False) -> list[dict]:
    """`n_frames` consecutive frames of one procedural street, the camera driving forward `step` m a frame.

    Each frame: ``image`` (HxWx3 uint8, camera 2 for KITTI), ``depth`` (z-depth m, inf = sky), and with
    `stereo` an ``image_right`` (camera 3); with `lidar` a ``velodyne`` (N,4) float32 scan.
    """
    rng = np.random.default_rng(seed)
    scene = sample_street(rng, length=n_frames * step + 120)
    frames = []
    for k in range(n_frames):
        cam0 = np.array([0.0, 0.0, k * step])
        view = cull(scene, cam0[2] - 20.0, cam0[2] + 150.0)
        x_left = CAM2_X if stereo or lidar else 0.0
        image, depth = render_view(view, camera, cam0 + [x_left, 0, 0], style, rng, seed)
        frame = {"image": image, "depth": depth}
        if stereo:
            frame["image_right"], _ = render_view(view, camera, cam0 + [CAM3_X, 0, 0], style, rng, seed)
        if lidar:
            frame["velodyne"] = velodyne_scan(cull(scene, cam0[2] - 130.0, cam0[2] + 130.0), cam0)
        frames.append(frame)
    return frames


def _render_job(job: tuple) -> list[dict]:
    args, kwargs = job
    return render_street_sequence(*args, **kwargs)


def render_sequences(jobs: list[tuple], workers: int = 1, desc: str = "render") -> list[list[dict]]:
    """`render_street_sequence` for many (args, kwargs) jobs, in `workers` processes (numpy is single-threaded).

    Each job has its own seed, so the result does not depend on `workers`."""
    if workers <= 1 or len(jobs) <= 1:
        return [_render_job(job) for job in tqdm(jobs, desc=desc, leave=False)]
    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(tqdm(pool.map(_render_job, jobs), total=len(jobs), desc=desc, leave=False))


MAKE3D_GRID = (55, 305)


def render_make3d(seed: int, camera: Camera) -> dict:
    """One Make3D-style sample: portrait JPEG-able image and a (55, 305, 4) ``Position3DGrid``.

    Grid channels as in the Make3D readme: 0 vertical Y, 1 horizontal X, 2 projective depth Z, 3 the laser
    range d (metres, Euclidean); axis 0 runs down the image. Sky cells get the scanner's 81.9 m saturation,
    which the C1 protocol (< 70 m) excludes.
    """
    rng = np.random.default_rng(seed)
    scene = sample_campus(rng)
    origin = np.zeros(3)
    image, _ = render_view(scene, camera, origin, "make3d", rng, seed)
    rows, cols = MAKE3D_GRID
    vs, us = np.linspace(0, camera.height - 1, rows), np.linspace(0, camera.width - 1, cols)
    uu, vv = np.meshgrid(us, vs)
    dirs = np.stack([(uu - camera.cx) / camera.fx, (vv - camera.cy) / camera.fy, np.ones_like(uu)], -1)
    hit = raycast(origin, dirs.reshape(-1, 3), scene)
    point = np.where(np.isfinite(hit["t"])[:, None], hit["point"], dirs.reshape(-1, 3) * 81.9
                     / np.linalg.norm(dirs.reshape(-1, 3), axis=1, keepdims=True))
    rng_d = np.minimum(np.linalg.norm(point, axis=1), 81.9)
    grid = np.stack([-point[:, 1], point[:, 0], point[:, 2], rng_d], axis=1).reshape(rows, cols, 4)
    return {"image": image, "grid": grid.astype(np.float64)}


# ----------------------------------------------------------------------------------------------------------
# Writers: the arrays above through the chapter-2 format writers

VKITTI_WORLDS = ("0001", "0002", "0006", "0018", "0020")


def write_vkitti(root: str | Path, worlds: int, frames: int, size, variations=("clone",), seed: int = 0,
                workers: int = 1) -> list:
    """Virtual KITTI 1.3.1 layout via ``sharingan.data.vkitti``; returns the RGB entries (+ ``trainA.txt``)."""
    # deferred: the spawned render workers (_render_job) import this module, and the writers bring torch (+1.3 s
    # per worker, measured)
    from sharingan.data.images import write_rgb
    from sharingan.data.vkitti import V1_RGB, depth_path_for, write_depth_png_cm, write_vkitti_list

    root = Path(root)
    camera = Camera.kitti_like(*size)
    names = [VKITTI_WORLDS[w] if w < len(VKITTI_WORLDS) else f"{w + 1:04d}" for w in range(worlds)]
    # same seed for every variation: identical geometry, different light (as vKITTI's variations)
    jobs = [((seed * 1000 + w, frames, camera, f"synthetic:{variation}"), {})
            for w in range(worlds) for variation in variations]
    sequences = iter(render_sequences(jobs, workers, "vKITTI"))
    entries = []
    for world in names:
        for variation in variations:
            for k, frame in enumerate(next(sequences)):
                entry = f"{V1_RGB}/{world}/{variation}/{k:05d}.png"
                write_rgb(root / entry, frame["image"])
                write_depth_png_cm(root / depth_path_for(entry), vkitti_depth_cm(frame["depth"]))
                entries.append(entry)
    write_vkitti_list(root / "trainA.txt", entries)
    return entries


def kitti_drive_seed(seed: int, number: int) -> int:
    """The scene seed of KITTI drive `number` (1-based, in the order train, val, test) of world `seed`: tests
    re-render a drive with it to get the dense true depth that the KITTI layout does not store."""
    return seed * 1000 + 500 + number


def write_kitti(root: str | Path, drives: dict, size, seed: int = 0, date: str = "2011_09_26",
                missing_velodyne: bool = True, workers: int = 1, style: str = "real",
                splits: Sequence[str] | None = None) -> dict:
    """KITTI raw layout via ``sharingan.data.kitti``: one date with its calibration files, drives with stereo
    PNGs (image_02/03) and Velodyne scans; `drives` = {split: (n_drives, frames_per_drive)}. Writes the
    SharinGAN 4-field lists ``<split>.txt`` in root. The first frame of the first training drive has no scan
    (as some real frames); only the training list may contain it. `style` "synthetic" re-renders the same
    drives (same seeds: identical geometry and scans) in vKITTI's appearance (demo/domain_gap.py); `splits`
    limits the writing to some splits without changing any drive's seed."""
    # deferred, as in write_vkitti
    from sharingan.data.images import write_rgb
    from sharingan.data.kitti import KittiEntry, write_calib_files, write_kitti_list, write_velodyne_bin

    root = Path(root)
    camera = Camera.kitti_like(*size)
    # KITTI's projection is 1-based (monodepth2 subtracts 1 after rounding): shift the principal point by one.
    write_calib_files(root / date, focal=camera.fx, cx=camera.cx + 1, cy=camera.cy + 1, baseline=CAM3_X - CAM2_X,
                      image_size=(camera.height, camera.width), velo_rotation=VELO_R, velo_translation=VELO_T,
                      left_offset=-CAM2_X)
    plan = [(split, d, int(frames)) for split, (n_drives, frames) in drives.items() for d in range(int(n_drives))]
    wanted = set(drives) if splits is None else set(splits)
    jobs = [((kitti_drive_seed(seed, number), frames, camera, style), {"stereo": True, "lidar": True})
            for number, (split, _, frames) in enumerate(plan, start=1) if split in wanted]
    sequences = iter(render_sequences(jobs, workers, "KITTI drives"))
    lists, drive_number = {}, 1
    for split, (n_drives, _) in drives.items():
        if split not in wanted:
            drive_number += int(n_drives)
            continue
        entries = []
        for d in range(int(n_drives)):
            folder = f"{date}/{date}_drive_{drive_number:04d}_sync"
            sequence = next(sequences)
            for k, frame in enumerate(sequence):
                name = f"{k:010d}"
                entry = KittiEntry(f"{folder}/image_02/data/{name}.png", f"{folder}/image_03/data/{name}.png",
                                   date, f"{folder}/velodyne_points/data/{name}.bin")
                write_rgb(root / entry.left, frame["image"])
                write_rgb(root / entry.right, frame["image_right"])
                if not (missing_velodyne and split == "train" and d == 0 and k == 0):
                    write_velodyne_bin(root / entry.velodyne, frame["velodyne"])
                entries.append(entry)
            drive_number += 1
        write_kitti_list(root / f"{split}.txt", entries)
        lists[split] = len(entries)
    return lists


def write_make3d(root: str | Path, n: int, size, seed: int = 0) -> list[str]:
    """Make3D Test134 layout via ``sharingan.data.make3d``: portrait JPEGs + v5 .mat laser grids."""
    # deferred, as in write_vkitti
    from sharingan.data.images import write_rgb
    from sharingan.data.make3d import write_make3d_mat

    root = Path(root)
    camera = Camera.make3d_like(*size)
    stems = []
    for k in tqdm(range(n), desc="Make3D", leave=False):
        sample = render_make3d(seed * 1000 + 900 + k, camera)
        stem = f"demo{k:03d}-p-{seed:03d}t000"
        write_rgb(root / "Test134" / f"img-{stem}.jpg", sample["image"])
        write_make3d_mat(root / "Gridlaserdata" / f"depth_sph_corr-{stem}.mat", sample["grid"][:, :, 3])
        stems.append(stem)
    return stems


def write_street_fixture(root: str | Path, n: int = 2, size=(24, 80), seed: int = 0) -> dict:
    """A tiny depth world for tests: ``vkitti/`` (1 world, n frames), ``kitti/`` (train and test drives of
    n frames) and ``make3d/`` (n samples), all through the real-format writers."""
    root = Path(root)
    return {"vkitti": write_vkitti(root / "vkitti", 1, n, size, seed=seed),
            "kitti": write_kitti(root / "kitti", {"train": (1, n), "test": (1, n)}, size, seed=seed),
            "make3d": write_make3d(root / "make3d", n, (size[1] * 4 // 3, size[1]), seed=seed)}
