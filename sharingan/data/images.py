"""Image reading, resizing and the shared augmentations of the depth datasets (docs/ref-sharingan.md §2.6).

Images are read as RGB uint8 with OpenCV (a missing or unreadable file raises an error naming it), resized
with bicubic interpolation like the official PIL pipeline, and handed to the networks in [-1, 1]
(Normalize(0.5, 0.5)).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from common.images import load_image_rgb


def read_rgb(path: str | Path, what: str = "image") -> np.ndarray:
    """(H, W, 3) uint8 RGB; raises FileNotFoundError / ValueError naming the file.

    The whole file is decoded (`common.images`), so a truncated PNG or JPEG is an error rather than a
    partly grey picture; greyscale or 16-bit files are converted to 8-bit RGB.
    """
    return load_image_rgb(path, what=what).image


def write_rgb(path: str | Path, image: np.ndarray, jpeg_quality: int = 95) -> Path:
    """Write an (H, W, 3) uint8 RGB image as PNG or JPEG (by suffix)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"write_rgb({path}): expected (H, W, 3) uint8, got {image.shape} {image.dtype}")
    params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if path.suffix.lower() in (".jpg", ".jpeg") else []
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), params):
        raise OSError(f"cannot write image {path}")
    return path


def resize(image: np.ndarray, size: tuple[int, int], interpolation: int = cv2.INTER_CUBIC) -> np.ndarray:
    """Resize to (height, width)."""
    height, width = int(size[0]), int(size[1])
    if image.shape[:2] == (height, width):
        return image
    return cv2.resize(image, (width, height), interpolation=interpolation)


def to_network(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 (or float in [0, 255]) -> (3, H, W) float32 in [-1, 1]."""
    array = np.clip(np.asarray(image, dtype=np.float32), 0.0, 255.0) / 255.0
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))) * 2.0 - 1.0


def rotate(image: np.ndarray, degrees: float, interpolation: int) -> np.ndarray:
    """Rotate about the centre, corners filled with 0 (as PIL's rotate in the official loaders)."""
    height, width = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2.0, height / 2.0), degrees, 1.0)
    return cv2.warpAffine(image, matrix, (width, height), flags=interpolation, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=0)


def colour_jitter(images: list[np.ndarray], rng: np.random.Generator,
                  ranges: tuple[float, float] = (0.8, 1.0)) -> list[np.ndarray]:
    """Brightness, contrast and saturation factors ~U(0.8, 1.0), the *same* factors for every image given
    (both views of a stereo pair), as the official KITTI augmentation."""
    brightness, contrast, saturation = rng.uniform(*ranges, size=3)
    out = []
    for image in images:
        x = image.astype(np.float32) * brightness
        grey_mean = (x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)).mean()
        x = (x - grey_mean) * contrast + grey_mean
        grey = (x @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[..., None]
        x = (x - grey) * saturation + grey
        out.append(np.clip(x, 0, 255).astype(np.uint8))
    return out
