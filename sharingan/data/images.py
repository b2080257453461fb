"""Image reading, resizing and the shared augmentations of the depth datasets (docs/ref-sharingan.md §2.6).

Images are read as RGB uint8 by `common.images.read_rgb` (a missing or unreadable file raises an error naming
it), resized with Pillow
exactly as the official pipeline (torchvision `Resize` on PIL images: anti-aliased, i.e. the filter is widened
by the shrink factor when downscaling), and handed to the networks in [-1, 1] (Normalize(0.5, 0.5)).
Filters per dataset (docs/ref-sharingan.md §2.6, §3.3): KITTI and vKITTI images and vKITTI depth labels
bicubic; Make3D's two image resizes bilinear.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image


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


PIL_FILTERS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
               "nearest": Image.Resampling.NEAREST}
# OpenCV flags some callers pass; each means the Pillow filter of the same name (not OpenCV's resize).
_OPENCV_FLAGS = {cv2.INTER_CUBIC: "bicubic", cv2.INTER_LINEAR: "bilinear", cv2.INTER_NEAREST: "nearest"}


def resize(image: np.ndarray, size: tuple[int, int], interpolation: str | int = "bicubic") -> np.ndarray:
    """Resize to (height, width) with Pillow, as the official pipeline (anti-aliased when shrinking).

    `interpolation`: "bicubic", "bilinear" or "nearest" (the OpenCV flags INTER_CUBIC / INTER_LINEAR /
    INTER_NEAREST name the same Pillow filters). (H, W, 3) uint8 images are resized as Pillow "RGB" (the result
    is Pillow's rounded uint8), (H, W) uint8 as "L"; (H, W) float arrays (depth labels) as Pillow "F"
    (float32, no rounding), returned as float32. Pillow "F" works in float32, so float64 input loses precision
    below ~1e-7 relative.
    """
    height, width = int(size[0]), int(size[1])
    if image.shape[:2] == (height, width):
        return image
    name = _OPENCV_FLAGS.get(interpolation, interpolation) if isinstance(interpolation, int) else interpolation
    if name not in PIL_FILTERS:
        raise ValueError(f"resize: unknown interpolation {interpolation!r} (expected one of {sorted(PIL_FILTERS)} "
                         "or cv2.INTER_CUBIC / INTER_LINEAR / INTER_NEAREST)")
    array = np.asarray(image)
    if array.dtype == np.uint8 and array.ndim == 3 and array.shape[2] == 3:
        mode = "RGB"
    elif array.dtype == np.uint8 and array.ndim == 2:
        mode = "L"
    elif np.issubdtype(array.dtype, np.floating) and array.ndim == 2:
        mode, array = "F", array.astype(np.float32)
    else:
        raise ValueError(f"resize: expected (H, W, 3) uint8, (H, W) uint8 or (H, W) float, got {array.shape} "
                         f"{array.dtype}")
    picture = Image.fromarray(np.ascontiguousarray(array))  # the mode follows from shape and dtype
    if picture.mode != mode:
        raise ValueError(f"resize: Pillow read the {array.shape} {array.dtype} array as mode {picture.mode!r}, "
                         f"expected {mode!r}")
    return np.asarray(picture.resize((width, height), resample=PIL_FILTERS[name])).copy()


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
