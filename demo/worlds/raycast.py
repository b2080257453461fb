"""Analytic ray casting of simple scenes: a ground plane, axis-aligned boxes, vertical cylinders.

Used by the street world (dissertation §2.3.1: vKITTI / KITTI / Make3D stand-ins). Coordinates are those of
a rectified KITTI camera: x right, y down, z forward; the ground is the plane y = `ground_y`. Every ray gets
the exact hit distance, so depth labels are exact (no rasteriser, no depth buffer quantisation).
"""

from __future__ import annotations

import numpy as np

EPS = 1e-6


def _hit_boxes(origins, dirs, boxes):
    """Nearest hit of each ray with a list of boxes (x0, x1, y0, y1, z0, z1). Returns t, index, normal."""
    n = dirs.shape[0]
    best_t = np.full(n, np.inf)
    best_i = np.full(n, -1)
    best_axis = np.zeros(n, dtype=np.int64)
    safe = np.where(dirs == 0, 1e-12, dirs)  # a ray parallel to a slab: huge |t|, same verdict
    inv = [1.0 / safe[:, k] for k in range(3)]
    org = [np.ascontiguousarray(origins[:, k]) for k in range(3)]
    for index, box in enumerate(boxes):
        lows, highs = [], []
        for k in range(3):
            a = (box[2 * k] - org[k]) * inv[k]
            b = (box[2 * k + 1] - org[k]) * inv[k]
            lows.append(np.minimum(a, b))
            highs.append(np.maximum(a, b))
        tmin = np.maximum(np.maximum(lows[0], lows[1]), lows[2])
        tmax = np.minimum(np.minimum(highs[0], highs[1]), highs[2])
        hit = (tmax >= tmin) & (tmin > EPS) & (tmin < best_t)
        if not hit.any():
            continue
        best_t[hit] = tmin[hit]
        best_i[hit] = index
        axis = np.where(lows[0][hit] >= lows[1][hit], 0, 1)
        axis = np.where(lows[2][hit] >= np.maximum(lows[0][hit], lows[1][hit]), 2, axis)
        best_axis[hit] = axis
    normals = np.zeros_like(dirs)
    rows = np.arange(n)
    normals[rows, best_axis] = -np.sign(dirs[rows, best_axis])
    return best_t, best_i, normals


def _hit_cylinders(origins, dirs, cylinders, ground_y):
    """Vertical cylinders (cx, cz, radius, height) standing on the ground plane."""
    n = dirs.shape[0]
    best_t = np.full(n, np.inf)
    best_i = np.full(n, -1)
    normals = np.zeros_like(dirs)
    for index, (cx, cz, radius, height) in enumerate(cylinders):
        ox, oz = origins[:, 0] - cx, origins[:, 2] - cz
        a = dirs[:, 0] ** 2 + dirs[:, 2] ** 2
        b = 2 * (dirs[:, 0] * ox + dirs[:, 2] * oz)
        c = ox**2 + oz**2 - radius**2
        disc = b * b - 4 * a * c
        with np.errstate(invalid="ignore", divide="ignore"):
            t = (-b - np.sqrt(np.maximum(disc, 0))) / (2 * np.maximum(a, EPS))
        y = origins[:, 1] + t * dirs[:, 1]
        hit = (disc > 0) & (a > EPS) & (t > EPS) & (y <= ground_y) & (y >= ground_y - height) & (t < best_t)
        best_t = np.where(hit, t, best_t)
        best_i = np.where(hit, index, best_i)
        px = ox + t * dirs[:, 0]
        pz = oz + t * dirs[:, 2]
        normals[hit] = np.stack([px[hit], np.zeros(hit.sum()), pz[hit]], axis=1) / radius
    return best_t, best_i, normals


def raycast(origins: np.ndarray, dirs: np.ndarray, scene: dict) -> dict:
    """Cast rays (N,3) from `origins` (N,3 or 3,) along `dirs` through `scene`.

    `scene` holds `ground_y`, `boxes` (list of 6-tuples) and `cylinders` (list of 4-tuples). Returns a dict:
    `t` (N,) ray parameter of the nearest hit (inf = sky), `kind` (N,) 0 sky / 1 ground / 2 box / 3 cylinder,
    `index` (N,) object index within its kind, `normal` (N,3), `point` (N,3) hit point.
    """
    dirs = np.asarray(dirs, dtype=np.float64)
    origins = np.broadcast_to(np.asarray(origins, dtype=np.float64), dirs.shape)
    n = dirs.shape[0]
    ground_y = float(scene["ground_y"])
    with np.errstate(divide="ignore", invalid="ignore"):
        t_ground = np.where(dirs[:, 1] > EPS, (ground_y - origins[:, 1]) / dirs[:, 1], np.inf)
    t_ground = np.where(t_ground > EPS, t_ground, np.inf)
    t_box, i_box, n_box = _hit_boxes(origins, dirs, scene.get("boxes", []))
    t_cyl, i_cyl, n_cyl = _hit_cylinders(origins, dirs, scene.get("cylinders", []), ground_y)
    stacked = np.stack([np.full(n, np.inf), t_ground, t_box, t_cyl])
    stacked[0] = np.where(np.isfinite(stacked[1:]).any(axis=0), np.inf, 0.0)  # sky only if nothing else
    kind = stacked.argmin(axis=0)
    t = np.where(kind == 0, np.inf, stacked.min(axis=0))
    index = np.select([kind == 2, kind == 3], [i_box, i_cyl], default=0)
    ground_normal = np.broadcast_to(np.array([0.0, -1.0, 0.0]), dirs.shape)
    normal = np.select([kind[:, None] == 1, kind[:, None] == 2, kind[:, None] == 3],
                       [ground_normal, n_box, n_cyl], default=0.0)
    with np.errstate(invalid="ignore"):
        point = np.where(np.isfinite(t)[:, None], origins + t[:, None] * dirs, np.nan)
    return {"t": t, "kind": kind, "index": index, "normal": normal, "point": point}


def camera_rays(height: int, width: int, fx: float, fy: float, cx: float, cy: float,
                supersample: int = 1) -> np.ndarray:
    """Ray directions with unit z (so the ray parameter is the z-depth), one per (sub)pixel, row-major.

    Pixel (row v, column u) is centred at image coordinate (u, v), the KITTI projection convention.
    With `supersample` s, each pixel gets s x s sub-rays (returned as (H*s, W*s, 3) then flattened).
    """
    s = supersample
    offsets = (np.arange(s) + 0.5) / s - 0.5
    us = (np.arange(width)[:, None] + offsets[None, :]).reshape(-1)
    vs = (np.arange(height)[:, None] + offsets[None, :]).reshape(-1)
    uu, vv = np.meshgrid(us, vs)
    dirs = np.stack([(uu - cx) / fx, (vv - cy) / fy, np.ones_like(uu)], axis=-1)
    return dirs.reshape(-1, 3)
