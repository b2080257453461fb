"""Small procedural-texture helpers shared by the worlds (value noise, blur, sensor noise)."""

from __future__ import annotations

import cv2
import numpy as np


def hash2(ix: np.ndarray, iy: np.ndarray, seed: int = 0) -> np.ndarray:
    """Deterministic pseudo-random value in [0, 1) per integer lattice point."""
    h = (np.asarray(ix, np.int64) * 374761393 + np.asarray(iy, np.int64) * 668265263 + seed * 2246822519) \
        & 0xFFFFFFFF
    h = ((h ^ (h >> 13)) * 1274126177) & 0xFFFFFFFF
    return ((h ^ (h >> 16)) & 0xFFFFFF) / float(0x1000000)


def value_noise(x: np.ndarray, y: np.ndarray, seed: int = 0, octaves: int = 3) -> np.ndarray:
    """Smooth fractal value noise in [0, 1] at real coordinates (x, y)."""
    total = np.zeros(np.broadcast(x, y).shape)
    norm = 0.0
    for octave in range(octaves):
        f = 2.0**octave
        xs, ys = np.asarray(x) * f, np.asarray(y) * f
        ix, iy = np.floor(xs), np.floor(ys)
        fx, fy = xs - ix, ys - iy
        fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
        s = seed + 101 * octave
        a, b = hash2(ix, iy, s), hash2(ix + 1, iy, s)
        c, d = hash2(ix, iy + 1, s), hash2(ix + 1, iy + 1, s)
        value = (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy
        total += value / f
        norm += 1.0 / f
    return total / norm


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0:
        return image
    return cv2.GaussianBlur(image.astype(np.float32), (0, 0), sigmaX=sigma, sigmaY=sigma,
                            borderType=cv2.BORDER_REFLECT)


def box_downsample(image: np.ndarray, factor: int) -> np.ndarray:
    """Average `factor` x `factor` blocks (anti-aliasing of a supersampled render)."""
    if factor == 1:
        return image
    h, w = image.shape[0] // factor, image.shape[1] // factor
    return image[: h * factor, : w * factor].reshape(h, factor, w, factor, *image.shape[2:]).mean(axis=(1, 3))


def sensor(image: np.ndarray, rng: np.random.Generator, cast=(1.0, 1.0, 1.0), noise: float = 0.02,
           blur: float = 0.0, vignette: float = 0.0, gamma: float = 1.0) -> np.ndarray:
    """A camera model applied to a linear HxWx3 float image: colour cast, vignetting, blur, gamma, noise."""
    out = image * np.asarray(cast, dtype=np.float64)[None, None, :]
    if vignette > 0:
        h, w = out.shape[:2]
        yy, xx = np.mgrid[0:h, 0:w]
        r2 = ((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2
        out = out * (1 - vignette * r2 / 2)[..., None]
    out = gaussian_blur(np.clip(out, 0, None), blur).astype(np.float64)
    out = np.clip(out, 0, None) ** (1.0 / gamma)
    out = out + rng.normal(0, noise, out.shape) * np.sqrt(np.clip(out, 0.05, 1))
    return np.clip(out, 0, 1)


def to_uint8(image: np.ndarray) -> np.ndarray:
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)
