"""Pictures of predictions, shared by TensorBoard logging and PNG figures.

Two calling conventions, so one function serves both uses:
- numpy: HxW (or HxWx3) arrays in -> HxWx3 uint8 out (for PNG files and reports);
- torch: (B,C,H,W) float tensors in -> (B,3,H,W) float in [0, 1] out (for `logger.experiment.add_images`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
import torchvision

from common.checkpoints import atomic_write


def _as_numpy(array) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        return array.detach().float().cpu().numpy()
    return np.asarray(array)


def to_uint8(image) -> np.ndarray:
    """Float image in [0, 1] (HxW, HxWx3 or 3xHxW) -> HxW(x3) uint8; uint8 passes through."""
    array = _as_numpy(image)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = np.transpose(array, (1, 2, 0))
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.dtype == np.uint8:
        return array
    return (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _colorize_one(depth: np.ndarray, vmin: float | None, vmax: float | None, percentile: float,
                  inverse: bool) -> np.ndarray:
    depth = depth.astype(np.float64)
    valid = np.isfinite(depth) & (depth > 0)
    values = np.where(valid, 1.0 / np.where(valid, depth, 1.0), 0.0) if inverse else np.where(valid, depth, 0.0)
    if vmax is None:
        vmax = float(np.percentile(values[valid], percentile)) if valid.any() else 1.0
    if vmin is None:
        vmin = 0.0
    scale = max(vmax - vmin, 1e-12)
    normalised = np.clip((values - vmin) / scale, 0.0, 1.0)
    colour = cv2.applyColorMap((normalised * 255.0 + 0.5).astype(np.uint8), cv2.COLORMAP_MAGMA)
    colour = cv2.cvtColor(colour, cv2.COLOR_BGR2RGB)
    colour[~valid] = 0
    return colour


def colorize_depth(depth, vmax: float | None = None, percentile: float = 95.0, vmin: float | None = None,
                   inverse: bool = False):
    """Magma colour map of depth (or of 1/depth with `inverse=True`), range [vmin or 0, vmax].

    vmax defaults to the `percentile`-th percentile of the valid pixels of each image (monodepth2's choice,
    so a few far pixels do not wash out the picture). Pixels <= 0 or non-finite (no ground truth) are black.
    """
    if isinstance(depth, torch.Tensor):
        batch = depth.detach().float().cpu()
        if batch.dim() == 2:
            batch = batch[None, None]
        elif batch.dim() == 3:
            batch = batch[:, None]
        if batch.dim() != 4 or batch.shape[1] != 1:
            raise ValueError(f"colorize_depth: expected (B,1,H,W), (B,H,W) or (H,W), got {tuple(depth.shape)}")
        images = [_colorize_one(item[0].numpy(), vmin, vmax, percentile, inverse) for item in batch]
        return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0
    array = np.asarray(depth)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise ValueError(f"colorize_depth: expected an HxW array, got shape {array.shape}")
    return _colorize_one(array, vmin, vmax, percentile, inverse)


def normals_to_rgb(normals, mask=None):
    """Unit normals in [-1, 1] -> colours (n + 1) / 2; pixels outside `mask` are black."""
    if isinstance(normals, torch.Tensor):
        if normals.dim() != 4 or normals.shape[1] != 3:
            raise ValueError(f"normals_to_rgb: expected (B,3,H,W), got {tuple(normals.shape)}")
        rgb = ((normals.detach().float() + 1.0) / 2.0).clamp(0.0, 1.0)
        if mask is not None:
            rgb = rgb * (mask.detach().float() > 0.5)
        return rgb.cpu()
    array = np.asarray(normals, dtype=np.float64)
    if array.ndim == 3 and array.shape[0] == 3 and array.shape[-1] != 3:
        array = np.transpose(array, (1, 2, 0))
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"normals_to_rgb: expected HxWx3 or 3xHxW, got shape {array.shape}")
    rgb = to_uint8((array + 1.0) / 2.0)
    if mask is not None:
        rgb = rgb * (np.asarray(mask) > 0.5)[..., None].astype(np.uint8)
    return rgb


def overlay_mask(image, mask, color: tuple[int, int, int] = (255, 0, 0), alpha: float = 0.5):
    """Blend `color` over the pixels where `mask` > 0.5 (image float [0,1] or uint8; mask HxW / (B,1,H,W))."""
    tint = np.asarray(color, dtype=np.float64) / 255.0
    if isinstance(image, torch.Tensor):
        if image.dim() != 4 or image.shape[1] != 3:
            raise ValueError(f"overlay_mask: expected image (B,3,H,W), got {tuple(image.shape)}")
        if mask.shape[-2:] != image.shape[-2:]:
            raise ValueError(f"overlay_mask: mask {tuple(mask.shape)} and image {tuple(image.shape)} differ in size")
        weight = (mask.detach().float().cpu() > 0.5).float().reshape(image.shape[0], 1, *image.shape[-2:]) * alpha
        colour = torch.tensor(tint, dtype=torch.float32).view(1, 3, 1, 1)
        return image.detach().float().cpu() * (1 - weight) + colour * weight
    base = to_uint8(image).astype(np.float64) / 255.0
    if base.ndim == 2:
        base = np.repeat(base[..., None], 3, axis=2)
    mask = np.asarray(mask)
    if mask.shape != base.shape[:2]:
        raise ValueError(f"overlay_mask: mask shape {mask.shape} differs from image shape {base.shape[:2]}")
    weight = (mask > 0.5)[..., None] * alpha
    return to_uint8(base * (1 - weight) + tint * weight)


def image_grid(images, nrow: int = 4, padding: int = 2):
    """Tile images: a (B,3,H,W) tensor or list of them -> (3,H',W') tensor; a list of HxWx3 arrays -> uint8."""
    if isinstance(images, torch.Tensor) or (isinstance(images, Sequence) and images and
                                            isinstance(images[0], torch.Tensor)):
        batch = images if isinstance(images, torch.Tensor) else torch.cat([image.float().cpu() for image in images])
        return torchvision.utils.make_grid(batch, nrow=nrow, padding=padding)
    arrays = [to_uint8(image) for image in images]
    arrays = [np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a for a in arrays]
    tensor = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
    grid = torchvision.utils.make_grid(tensor, nrow=nrow, padding=padding)
    return grid.permute(1, 2, 0).numpy()


def save_png(path: str | Path, image) -> Path:
    """Write a PNG atomically: uint8 / uint16 HxW(x3) arrays as they are, floats in [0,1] via `to_uint8`.

    RGB order is assumed for 3-channel input (converted to OpenCV's BGR here).
    """
    array = _as_numpy(image)
    if array.dtype not in (np.uint8, np.uint16):
        array = to_uint8(array)
    elif array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = np.transpose(array, (1, 2, 0))
    if array.ndim == 3 and array.shape[-1] == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".png", array)
    if not ok:
        raise ValueError(f"could not encode {path} as PNG (array {array.shape}, {array.dtype})")
    with atomic_write(path, "wb") as file:
        file.write(encoded.tobytes())
    return Path(path)
