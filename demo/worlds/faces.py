"""The face world: procedural height-field heads lit by 27-d spherical harmonics (dissertation §2.3.2).

A head is a height field over the image plane: an ellipsoid with a nose ridge, eye sockets, brow ridge,
cheeks, lips and chin, each with random size. Normals come from the height field's gradient, the albedo is
a skin tone with eyes, brows, lips and blotches, and the light is a 27-d second-order SH vector
([R0..8 | G0..8 | B0..8], SfSNet's order).

- ``synthetic`` = SfSNet's synthetic data: the exact Lambertian SH render shading(n, L) * albedo, with every
  label (normal, albedo, mask, light). Same shading formula as SfSNet (docs/ref-sharingan.md §1.6).
- ``real`` = what the synthetic renderer cannot do: specular highlights, cast shadows (the nose and brows
  shadow the face), hair, a textured background, camera noise and colour cast. Written in the CelebA layout
  (no labels), the Photoface layout (four fixed lights per session; normals + mask for testing) and the
  Multi-PIE layout (a fixed set of flash directions, one per illumination id, for lighting classification).

Normal convention: unit vectors (x right, y up, z towards the camera); on disk as (n + 1) / 2.
The renderers return arrays only; the chapter-2 writers (``sharingan.data.*``) write the files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from common.checkpoints import write_text
from demo.worlds.noise import gaussian_blur, sensor, to_uint8, value_noise
from sharingan.data.celeba import write_celeba_fixture
from sharingan.data.multipie import FRONTAL_CAMERA
from sharingan.data.photoface import LIST_FILES, RESULTS_FOLDER
from sharingan.data.sfsnet_synthetic import write_png, write_synthetic_sample

# SH shading constants (SfSNet Shading_Layer; docs/ref-sharingan.md §1.6)
_ATT = np.pi * np.array([1.0, 2.0 / 3.0, 0.25])
_C1 = _ATT[0] / np.sqrt(4 * np.pi)
_C2 = _ATT[1] * np.sqrt(3 / (4 * np.pi))
_C3 = _ATT[2] * 0.5 * np.sqrt(5 / (4 * np.pi))
_C4 = _ATT[2] * 3 * np.sqrt(5 / (12 * np.pi))
_C5 = _ATT[2] * 3 * np.sqrt(5 / (48 * np.pi))


def sh_basis(normals: np.ndarray) -> np.ndarray:
    """(..., 3) unit normals -> (..., 9) SH basis values in SfSNet's order."""
    nx, ny, nz = normals[..., 0], normals[..., 1], normals[..., 2]
    return np.stack([np.full_like(nx, _C1), _C2 * nz, _C2 * nx, _C2 * ny, _C3 * (2 * nz**2 - nx**2 - ny**2),
                     _C4 * nx * nz, _C4 * ny * nz, _C5 * (nx**2 - ny**2), _C4 * nx * ny], axis=-1)


def sh_shading(normals: np.ndarray, light: np.ndarray) -> np.ndarray:
    """(H,W,3) unit normals, (27,) light -> (H,W,3) shading, channel c = sum_k L[9c+k] H_k."""
    return sh_basis(normals) @ np.asarray(light, dtype=np.float64).reshape(3, 9).T


def directional_sh(direction, intensity: float, ambient: float, color=(1.0, 1.0, 1.0)) -> np.ndarray:
    """27-d light for an ambient term plus a distant light from `direction` (first-order projection)."""
    d = np.asarray(direction, dtype=np.float64)
    d = d / np.linalg.norm(d)
    one = np.zeros(9)
    one[0] = ambient / _C1
    one[1:4] = intensity * np.array([d[2], d[0], d[1]]) / _C2
    return np.concatenate([one * c for c in color])


def sample_light(rng: np.random.Generator) -> np.ndarray:
    """A random SfSNet-like light: mostly frontal direction, ambient, mild colour and 2nd-order terms."""
    direction = np.array([rng.uniform(-1, 1), rng.uniform(-0.8, 0.8), rng.uniform(0.3, 1.2)])
    light = directional_sh(direction, rng.uniform(0.35, 0.75), rng.uniform(0.45, 0.7),
                           color=rng.uniform(0.85, 1.1, size=3))
    second = rng.normal(0, 0.06, size=(3, 5))
    light = light.reshape(3, 9)
    light[:, 4:] += second
    return light.reshape(27)


def light_direction(light: np.ndarray) -> np.ndarray:
    """Dominant direction of a 27-d light (from the first-order terms averaged over colours)."""
    l = np.asarray(light).reshape(3, 9).mean(axis=0)
    d = np.array([l[2], l[3], l[1]])
    return d / max(np.linalg.norm(d), 1e-8)


# ----------------------------------------------------------------------------------------------------------
# Geometry and albedo

def _gauss(x, y, cx, cy, sx, sy):
    return np.exp(-(((x - cx) / sx) ** 2) - ((y - cy) / sy) ** 2)


def _lerp(a, b, t: float) -> np.ndarray:
    return np.asarray(a) + (np.asarray(b) - np.asarray(a)) * t


def sample_face(rng: np.random.Generator) -> dict:
    """Random face parameters (geometry and skin)."""
    return {
        "a": rng.uniform(0.6, 0.72), "b": rng.uniform(0.8, 0.9), "depth": rng.uniform(0.55, 0.8),
        "shift": rng.uniform(-0.04, 0.04, size=2), "nose": rng.uniform(0.18, 0.32),
        "nose_w": rng.uniform(0.07, 0.11), "eye": rng.uniform(0.06, 0.12), "eye_x": rng.uniform(0.26, 0.34),
        "brow": rng.uniform(0.03, 0.07), "cheek": rng.uniform(0.02, 0.06), "chin": rng.uniform(0.02, 0.06),
        "skin": _lerp((0.36, 0.23, 0.16), (0.96, 0.8, 0.7), rng.uniform()) * rng.uniform(0.95, 1.05, size=3),
        "lip": _lerp((0.45, 0.15, 0.15), (0.8, 0.4, 0.4), rng.uniform()),
        "iris": _lerp((0.1, 0.06, 0.03), (0.3, 0.45, 0.6), rng.uniform()),
        "hair": _lerp((0.04, 0.03, 0.02), (0.75, 0.6, 0.35), rng.uniform() ** 2),
        "hairline": rng.uniform(-0.62, -0.45), "seed": int(rng.integers(0, 2**31 - 1)),
    }


def face_geometry(params: dict, size: int) -> dict:
    """Height field, unit normals (x right, y up, z out), mask and albedo at `size` x `size`."""
    coords = (np.arange(size) + 0.5) / size * 2 - 1
    x, y = np.meshgrid(coords, coords)  # y grows downwards (image rows)
    x = x - params["shift"][0]
    y = y - params["shift"][1]
    a, b = params["a"], params["b"]
    r2 = (x / a) ** 2 + (y / b) ** 2
    mask = r2 < 1.0
    h = np.sqrt(np.clip(1 - r2, 0, None)) * params["depth"]
    ex = params["eye_x"]
    h += params["nose"] * _gauss(x, y, 0, 0.08, params["nose_w"], 0.22) * (y > -0.2)
    h -= params["eye"] * (_gauss(x, y, -ex, -0.12, 0.13, 0.09) + _gauss(x, y, ex, -0.12, 0.13, 0.09))
    h += params["brow"] * _gauss(x, y, 0, -0.28, 0.45, 0.05)
    h += params["cheek"] * (_gauss(x, y, -0.33, 0.18, 0.15, 0.15) + _gauss(x, y, 0.33, 0.18, 0.15, 0.15))
    h -= 0.03 * _gauss(x, y, 0, 0.47, 0.2, 0.025)
    h += params["chin"] * _gauss(x, y, 0, 0.68, 0.18, 0.08)
    h = np.where(mask, h, 0.0)
    step = 2.0 / size
    dh_drow, dh_dcol = np.gradient(h, step)
    normals = np.stack([-dh_dcol, dh_drow, np.ones_like(h)], axis=-1)  # y up: d/dy_up = -d/drow
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
    normals[~mask] = (0.0, 0.0, 1.0)
    # albedo
    tone = params["skin"] * (0.85 + 0.3 * value_noise(x * 4 + 10, y * 4, params["seed"], 2))[..., None]
    albedo = np.broadcast_to(tone, (size, size, 3)).copy()
    eyes = (_gauss(x, y, -ex, -0.12, 0.07, 0.035) + _gauss(x, y, ex, -0.12, 0.07, 0.035)) > 0.5
    albedo[eyes] = (0.85, 0.85, 0.82)
    iris = (_gauss(x, y, -ex, -0.12, 0.03, 0.03) + _gauss(x, y, ex, -0.12, 0.03, 0.03)) > 0.5
    albedo[iris] = params["iris"]
    brows = (_gauss(x, y, -ex, -0.24, 0.1, 0.02) + _gauss(x, y, ex, -0.24, 0.1, 0.02)) > 0.5
    albedo[brows] = params["hair"]
    lips = _gauss(x, y, 0, 0.47, 0.16, 0.05) > 0.5
    albedo[lips] = params["lip"]
    albedo[~mask] = 0.0
    return {"height": h, "normal": normals, "mask": mask, "albedo": np.clip(albedo, 0, 1), "x": x, "y": y}


# ----------------------------------------------------------------------------------------------------------
# Renderers

def render_synthetic(params: dict, light: np.ndarray, size: int) -> dict:
    """SfSNet-style sample: exact Lambertian SH image and all labels (arrays in [0, 1] / unit vectors)."""
    geo = face_geometry(params, size)
    shading = sh_shading(geo["normal"], light)
    image = np.clip(shading * geo["albedo"], 0, 1) * geo["mask"][..., None]
    return {"image": to_uint8(image), "normal": geo["normal"], "albedo": to_uint8(geo["albedo"]),
            "mask": geo["mask"], "light": np.asarray(light, dtype=np.float64), "shading": shading}


def _cast_shadow(height: np.ndarray, direction: np.ndarray, steps: int = 16) -> np.ndarray:
    """1 where the height field blocks the light `direction` (x right, y up, z out), else 0."""
    size = height.shape[0]
    dxy = np.array([direction[0], -direction[1]])  # image columns right, rows down
    norm = np.linalg.norm(dxy)
    if norm < 1e-6 or direction[2] <= 0:
        return np.zeros_like(height)
    dxy = dxy / norm
    rise = direction[2] / norm * (2.0 / size)  # height gained per pixel travelled towards the light
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float64)
    shadow = np.zeros_like(height, dtype=bool)
    for k in range(1, steps + 1):
        dist = k * max(size / 64.0, 1.0)
        r = np.clip(np.round(rows + dxy[1] * dist).astype(int), 0, size - 1)
        c = np.clip(np.round(cols + dxy[0] * dist).astype(int), 0, size - 1)
        shadow |= height[r, c] > height + rise * dist + 1e-3
    return shadow.astype(np.float64)


REAL_EFFECTS = ("shadow", "specular", "background", "hair", "camera")


def render_real(params: dict, light: np.ndarray, size: int, rng: np.random.Generator,
                effects=REAL_EFFECTS) -> dict:
    """A "real" face: Lambertian SH + cast shadow + specular, hair, textured background, camera effects.

    Returns the uint8 image and the labels the real datasets carry (normal and mask for Photoface/testing).
    The mask is the skin the full render shows (hair removed, also when hair is switched off). `effects` (a
    subset of REAL_EFFECTS) switches effects off for the domain-gap attribution (demo/domain_gap.py); the random
    stream is drawn the same either way, so the faces, lights and every other effect stay identical.
    """
    unknown = set(effects) - set(REAL_EFFECTS)
    if unknown:
        raise ValueError(f"render_real: unknown effects {sorted(unknown)}; known: {list(REAL_EFFECTS)}")
    geo = face_geometry(params, size)
    direction = light_direction(light)
    shading = sh_shading(geo["normal"], light)
    first_order = np.asarray(light).reshape(3, 9)[:, 1:4].mean(axis=0)
    strength = np.linalg.norm(first_order) * _C2
    shadow = gaussian_blur(_cast_shadow(geo["height"], direction), size / 96.0)
    if "shadow" in effects:
        shading = shading - (shadow * strength * 0.8)[..., None]
    half = direction + np.array([0.0, 0.0, 1.0])
    half /= np.linalg.norm(half)
    spec = np.clip(geo["normal"] @ half, 0, 1) ** 30 * 0.35 * (1 - shadow)
    image = np.clip(shading, 0, None) * geo["albedo"] + (spec[..., None] if "specular" in effects else 0.0)
    mask = geo["mask"].copy()
    x, y = geo["x"], geo["y"]
    s = params["seed"]
    background_colour = rng.uniform(0.1, 0.9, size=3)  # drawn always: the random stream stays the same
    if "background" in effects:
        bg = background_colour * (0.6 + 0.6 * value_noise(x * 3 + 5, y * 3, s + 1, 4))[..., None]
        image = np.where(mask[..., None], image, bg)
    else:
        image = image * mask[..., None]  # black outside the face, as the world's synthetic faces
    wave = 0.05 * np.sin(x * 9 + s % 7)
    top = (y < params["hairline"] + wave + 0.25 * x**2) & (
        ((x / (params["a"] + 0.08)) ** 2 + ((y + 0.05) / (params["b"] + 0.08)) ** 2) < 1)
    if "hair" in effects:
        strands = 0.6 + 0.8 * value_noise(x * 40, y * 4, s + 2, 2)
        hair_rgb = params["hair"] * strands[..., None] * np.clip(shading, 0.3, None)
        image = np.where(top[..., None], hair_rgb, image)
    mask &= ~top  # also without hair: an attribution scores the same pixels as the full render
    cast = rng.uniform([0.9, 0.88, 0.8], [1.1, 1.05, 1.05])
    if "camera" in effects:
        image = sensor(np.clip(image, 0, 1.5), rng, cast=cast, noise=0.03, blur=size / 160.0, gamma=1.1)
    else:
        rng.normal(0, 0.03, image.shape)  # the sensor's noise draw: the random stream stays the same
        image = np.clip(image, 0, 1)
    return {"image": to_uint8(image), "normal": geo["normal"], "mask": mask}


# ----------------------------------------------------------------------------------------------------------
# Fixed lights of the real test sets

# Photoface: four lights of the capture device (zenith ~ 30 deg, one per quadrant).
PHOTOFACE_LIGHTS = [(np.sin(np.deg2rad(30)) * np.cos(a), np.sin(np.deg2rad(30)) * np.sin(a), np.cos(np.deg2rad(30)))
                    for a in np.deg2rad([45.0, 135.0, 225.0, 315.0])]


def multipie_light(shot: int, n_shots: int = 19) -> np.ndarray:
    """27-d light of Multi-PIE illumination `shot` (0 = no flash: ambient only; 1..n-1: flashes on an arc).

    The real flash positions are not documented (formats.md §9); ours sweep azimuth -90..90 degrees with
    alternating elevation, one fixed light per class, which is what lighting classification needs.
    """
    if shot == 0:
        return directional_sh((0, 0, 1), 0.0, 0.55)
    azimuth = np.deg2rad(-90 + 180 * (shot - 1) / max(n_shots - 2, 1))
    elevation = np.deg2rad(15.0 if shot % 2 else -5.0)
    direction = (np.sin(azimuth) * np.cos(elevation), np.sin(elevation), np.cos(azimuth) * np.cos(elevation))
    return directional_sh(direction, 0.7, 0.4)


# ----------------------------------------------------------------------------------------------------------
# Writers: the arrays above through the chapter-2 format writers

def encode_normals(normals: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Unit normals -> the [0, 1] PNG encoding (n + 1) / 2, zero outside the mask (as SfSNet's files)."""
    return (normals + 1.0) / 2.0 * mask[..., None]


def write_sfsnet(root: str | Path, n: int, size: int, seed: int = 0, per_folder: int = 100) -> int:
    """SfSNet synthetic layout via ``sharingan.data.sfsnet_synthetic.write_synthetic_sample``."""
    rng = np.random.default_rng(seed)
    for k in tqdm(range(n), desc="SfSNet synthetic", leave=False):
        params, light = sample_face(rng), sample_light(rng)
        s = render_synthetic(params, light, size)
        write_synthetic_sample(root, f"{k // per_folder + 1:04d}", f"{k:06d}", 1, k % 5 + 1, s["image"],
                               encode_normals(s["normal"], s["mask"]), s["albedo"], s["mask"].astype(np.float32),
                               light)
    return n


def _celeba_top(size: int) -> int:
    """Rows added above a square face of side `size` by `_celeba_canvas`."""
    return (int(round(size * 218 / 178)) - size) // 3


def _celeba_canvas(image: np.ndarray) -> np.ndarray:
    """Pad a square face to CelebA's aligned aspect (218 x 178, H x W) by repeating the border rows."""
    size = image.shape[1]
    height = int(round(size * 218 / 178))
    top = _celeba_top(size)
    return np.pad(image, ((top, height - size - top), (0, 0), (0, 0)), mode="edge")


# Where `face_geometry` puts the five CelebA landmarks, in face coordinates (x right, y down, before the
# shift): eye centres (the sockets and eye whites at (+-eye_x, -0.12)), the nose tip (peak of the nose ridge,
# (0, 0.08)), the mouth corners (ends of the lips, where their Gaussian falls to 0.5: x = +-0.16 sqrt(ln 2)).
_MOUTH_HALF_WIDTH = 0.16 * np.sqrt(np.log(2.0))


def face_landmarks(params: dict, size: int) -> np.ndarray:
    """(5, 2) pixel (x, y) of left eye, right eye, nose, left and right mouth corner (CelebA's order; 'left' =
    image left) in a `size` x `size` render; pixel centres at integers (pixel (r, c) is at (c, r))."""
    ex, (sx, sy) = params["eye_x"], params["shift"]
    face = np.array([[-ex, -0.12], [ex, -0.12], [0.0, 0.08], [-_MOUTH_HALF_WIDTH, 0.47], [_MOUTH_HALF_WIDTH, 0.47]])
    return (face + np.array([sx, sy]) + 1.0) / 2.0 * size - 0.5


def write_celeba(root: str | Path, counts, size: int, seed: int = 0) -> int:
    """CelebA (aligned) layout via ``sharingan.data.celeba.write_celeba_fixture`` with our real-style faces,
    including ``list_landmarks_align_celeba.txt`` (the five landmarks of each face, `face_landmarks`)."""
    rng = np.random.default_rng(seed)
    images, landmarks = [], []
    for _ in tqdm(range(int(sum(counts))), desc="CelebA", leave=False):
        params = sample_face(rng)
        face = render_real(params, sample_light(rng), size, rng)["image"]
        images.append(_celeba_canvas(face).astype(np.float32) / 255.0)
        landmarks.append(face_landmarks(params, size) + np.array([0.0, _celeba_top(size)]))
    write_celeba_fixture(root, counts=tuple(int(c) for c in counts), seed=seed, images=images, landmarks=landmarks)
    return len(images)


def write_photoface(root: str | Path, train_subjects: int, test_subjects: int, sessions: int, size: int,
                    seed: int = 0, style: str = "real", effects=REAL_EFFECTS) -> dict:
    """Photoface in SharinGAN's aligned form (``sharingan.data.photoface`` layout and list files): per session
    four images under the device's four lights, each with its ground-truth normal and mask PNG. `style`
    "synthetic" writes the same faces under the same lights rendered by the SfSNet-style renderer (exact
    Lambertian, no background, hair, shadows or camera), with the real style's normals and skin masks: the
    same test, only the appearance differs (demo/domain_gap.py). `effects` (real style only) switches real-style
    effects off one at a time for the gap's attribution, again on the same faces and lights."""
    if style not in ("real", "synthetic"):
        raise ValueError(f"write_photoface: style must be 'real' or 'synthetic', got {style!r}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    lines = {"train": [], "test": []}
    n_subjects = train_subjects + test_subjects
    for number in tqdm(range(n_subjects), desc="Photoface", leave=False):
        subject = f"{1001 + number:04d}"
        params = sample_face(rng)
        for session in range(sessions):
            folder = root / RESULTS_FOLDER / subject / f"2008-{session % 12 + 1:02d}-{number % 28 + 1:02d}_12-00-00"
            for k, direction in enumerate(PHOTOFACE_LIGHTS):
                light = directional_sh(direction, rng.uniform(0.6, 0.8), rng.uniform(0.3, 0.45))
                sample = render_real(params, light, size, rng, effects)  # always drawn: same random stream
                image = sample["image"] if style == "real" else render_synthetic(params, light, size)["image"]
                write_png(folder / f"im{k}_align.png", image)
                write_png(folder / f"im{k}_normal.png", encode_normals(sample["normal"], sample["mask"]))
                write_png(folder / f"im{k}_mask.png", sample["mask"].astype(np.float32))
                split = "test" if number >= train_subjects else "train"
                relative = (folder / f"im{k}_align.png").relative_to(root).as_posix()
                lines[split].append(f"/scratch2/{relative} 1 1 1")
    write_text(root / LIST_FILES["train"], "\n".join(lines["train"]) + "\n")
    write_text(root / LIST_FILES["test"], "\n".join(lines["test"]) + "\n")
    write_text(root / LIST_FILES["img"], "\n".join(line.split()[0] for line in lines["train"] + lines["test"]) + "\n")
    return {split: len(v) for split, v in lines.items()}


def write_multipie(root: str | Path, subjects: int, shots: int = 19, canvas=(480, 640), face_size: int = 300,
                   seed: int = 0) -> int:
    """Multi-PIE tree (``sharingan.data.multipie`` layout): frontal camera 05_1, session 1 recording 1, one
    PNG per (subject, illumination shot); the face fills the central `face_size` square that the protocol
    crops (300 x 300, then 128 x 128)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    count = 0
    for subject in tqdm(range(1, subjects + 1), desc="Multi-PIE", leave=False):
        params = sample_face(rng)
        folder = root / "session01" / "multiview" / f"{subject:03d}" / "01" / FRONTAL_CAMERA
        backdrop = rng.uniform(0.3, 0.6, size=3)
        for shot in range(shots):
            face = render_real(params, multipie_light(shot, shots), face_size, rng)["image"]
            image = np.empty((*canvas, 3), dtype=np.uint8)
            image[:] = to_uint8(backdrop)
            top, left = (canvas[0] - face_size) // 2, (canvas[1] - face_size) // 2
            image[top:top + face_size, left:left + face_size] = face
            write_png(folder / f"{subject:03d}_01_01_{FRONTAL_CAMERA.replace('_', '')}_{shot:02d}.png", image)
            count += 1
    return count


def write_faces_fixture(root: str | Path, n: int = 4, size: int = 32, seed: int = 0) -> dict:
    """A tiny face world for tests: ``sfsnet/``, ``celeba/``, ``photoface/``, ``multipie/``."""
    root = Path(root)
    return {"sfsnet": write_sfsnet(root / "sfsnet", n, size, seed),
            "celeba": write_celeba(root / "celeba", (n, 1, 1), size, seed),
            "photoface": write_photoface(root / "photoface", 1, 1, 1, size, seed),
            "multipie": write_multipie(root / "multipie", 2, shots=4, canvas=(size * 3, size * 4),
                                       face_size=size * 2, seed=seed)}
