"""Image/mask helpers shared by the Chapter-3 datasets: writing, the square crop, resizing to the model size
(images are read by `common.images.read_rgb`).

Conventions (docs/ref-ldznet.md §1.1, §3.2): images are RGB float tensors (3, H, W) in [-1, 1]
(``2 * x / 255 - 1``), resized bilinearly (``align_corners=True`` as in the CLIPSeg/LD-ZNet loaders);
masks are float tensors (1, H, W) in {0, 1}, resized with nearest neighbour.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from skimage.draw import polygon2mask

from common.checkpoints import atomic_write


def write_image(path: str | Path, image: np.ndarray, quality: int = 95) -> Path:
    """Write an HxWx3 (or HxW) uint8 array atomically; the format follows the suffix (.jpg, .png)."""
    path = Path(path)
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim not in (2, 3):
        raise ValueError(f"{path}: expected an HxW or HxWx3 uint8 array, got {array.dtype} {array.shape}")
    kwargs = {"quality": quality} if path.suffix.lower() in (".jpg", ".jpeg") else {}
    encoded = io.BytesIO()
    Image.fromarray(array).save(encoded, format=Image.registered_extensions().get(path.suffix.lower(), "PNG"),
                                **kwargs)
    with atomic_write(path, "wb") as file:  # an interrupted conversion never leaves a half-written image
        file.write(encoded.getvalue())
    return path


def image_to_tensor(image: np.ndarray, size: tuple[int, int] | None) -> torch.Tensor:
    """HxWx3 uint8 -> (3, h, w) float in [-1, 1], resized bilinearly to ``size`` = (h, w) when given."""
    tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()
    tensor = tensor / 127.5 - 1.0
    if size is not None and tuple(tensor.shape[-2:]) != tuple(size):
        tensor = F.interpolate(tensor[None], size=tuple(size), mode="bilinear", align_corners=True)[0]
    return tensor.clamp_(-1.0, 1.0)


def mask_to_tensor(mask: np.ndarray, size: tuple[int, int] | None) -> torch.Tensor:
    """HxW binary array -> (1, h, w) float in {0, 1}, nearest-neighbour resized when ``size`` is given."""
    tensor = torch.from_numpy((np.asarray(mask) > 0).astype(np.float32))[None]
    if size is not None and tuple(tensor.shape[-2:]) != tuple(size):
        tensor = F.interpolate(tensor[None], size=tuple(size), mode="nearest")[0]
    return tensor


def check_same_size(image: np.ndarray, mask: np.ndarray, where: str) -> None:
    """Image and label must cover the same pixels; a mismatch is a data error, never silently resized."""
    if image.shape[:2] != mask.shape[:2]:
        raise ValueError(
            f"{where}: image is {image.shape[0]}x{image.shape[1]} (HxW) but its mask is "
            f"{mask.shape[0]}x{mask.shape[1]}"
        )


def xy_polygons_to_mask(polygons, height: int, width: int, where: str = "polygons") -> np.ndarray:
    """Union of PhraseCut polygons (each a list of [x, y] pairs) as the evaluation protocol draws them.

    CLIPSeg's PhraseCut loader, which LD-ZNet's code and the protocol of Tables 3.1-3.4 follow
    (docs/ref-ldznet.md §3.2), rasterises every polygon with ``skimage.draw.polygon2mask((H, W), poly[:, ::-1])``
    on the float coordinates (row = y, column = x; pixel centres on integer coordinates, boundary included)
    and unions all polygons of all instances. Not PIL after ``int()`` truncation: for polygons of radius
    5-15 px the two disagree at IoU ~0.83.
    """
    mask = np.zeros((int(height), int(width)), dtype=bool)
    for k, polygon in enumerate(polygons):
        try:
            points = np.asarray([(float(x), float(y)) for x, y in polygon], dtype=np.float64).reshape(-1, 2)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}[{k}]: a polygon must be a list of [x, y] pairs ({exc})") from exc
        if not len(points):
            raise ValueError(f"{where}[{k}]: empty polygon")
        if not np.isfinite(points).all():
            raise ValueError(f"{where}[{k}]: polygon coordinates must be finite")
        mask |= polygon2mask((int(height), int(width)), points[:, ::-1])
    return mask.astype(np.uint8)


def random_square_crop(
    mask: np.ndarray, iterations: int = 50, min_frac: float = 0.05, generator: torch.Generator | None = None
) -> tuple[slice, slice]:
    """The training crop of dissertation §3.3: the largest square (side min(H, W)) keeping the object.

    Up to ``iterations`` random square windows are drawn; the first one holding more than
    ``min_frac * H * W`` mask pixels wins, otherwise the window with the most mask pixels (CLIPSeg's
    ``find_crop`` rule, docs/ref-ldznet.md §3.2). Random numbers come from torch (seeded per worker).
    """
    height, width = mask.shape[:2]
    side = min(height, width)
    fg = np.asarray(mask) > 0
    # Mask pixels per window depend only on the offset along the long axis: prefix sums make this O(1).
    along = fg.sum(axis=0) if width >= height else fg.sum(axis=1)
    prefix = np.concatenate([[0], np.cumsum(along)])
    span = max(height, width) - side
    threshold = min_frac * height * width
    best_offset, best_count = 0, -1
    for _ in range(iterations):
        offset = int(torch.randint(0, span + 1, (1,), generator=generator))
        count = int(prefix[offset + side] - prefix[offset])
        if count > threshold:
            best_offset = offset
            break
        if count > best_count:
            best_offset, best_count = offset, count
    if width >= height:
        return slice(0, height), slice(best_offset, best_offset + side)
    return slice(best_offset, best_offset + side), slice(0, width)
