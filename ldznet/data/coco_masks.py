"""COCO-style masks without pycocotools: RLE (compressed and uncompressed) and polygon rasterisation.

RefCOCO, RefCOCO+ and G-Ref store their masks as COCO annotations (dissertation §3.4.3). The semantics
follow pycocotools as documented in research/formats.md §12:

- an RLE is ``{"size": [H, W], "counts": ...}`` (height first); the counts are run lengths over the
  column-major (Fortran) flattening of the HxW mask, starting with a run of zeros;
- compressed counts are an ASCII string (chars 48..111, 5 data bits per char plus a continuation bit,
  each count from index 3 on stored as a difference to the count two places before); uncompressed counts
  are a plain list of ints (``iscrowd: 1`` annotations);
- a polygon is a flat ``[x1, y1, x2, y2, ...]`` list (x first, at least 3 points); it is rasterised the
  way pycocotools does it: coordinates name pixel corners (pixel (r, c) spans [c, c+1) x [r, r+1)), the
  outline is walked on a 5x finer grid (vertices snapped to it) and a pixel is inside when its centre is,
  so a rectangle from (1, 1) to (6, 4) covers columns 1..5 and rows 1..3.

Masks are returned as numpy uint8 arrays of shape (H, W) with values in {0, 1}.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

_POLY_SCALE = 5.0


def rle_string_to_counts(text: str | bytes) -> list[int]:
    """Decode a compressed COCO RLE string into its run lengths (pycocotools ``rleFrString``)."""
    if isinstance(text, bytes):
        text = text.decode("ascii")
    counts: list[int] = []
    pos = 0
    while pos < len(text):
        value = 0
        shift = 0
        more = True
        while more:
            if pos >= len(text):
                raise ValueError(f"truncated compressed RLE string {text[:40]!r}...")
            code = ord(text[pos]) - 48
            if not 0 <= code < 64:
                raise ValueError(f"invalid character {text[pos]!r} in compressed RLE string")
            value |= (code & 0x1F) << (5 * shift)
            more = bool(code & 0x20)
            pos += 1
            shift += 1
            if not more and (code & 0x10):
                value |= -1 << (5 * shift)  # sign-extend a negative difference
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


def counts_to_rle_string(counts: Sequence[int]) -> str:
    """Encode run lengths as a compressed COCO RLE string (pycocotools ``rleToString``)."""
    chars: list[str] = []
    for i, count in enumerate(counts):
        value = int(count)
        if i > 2:
            value -= int(counts[i - 2])
        more = True
        while more:
            code = value & 0x1F
            value >>= 5
            more = value != -1 if code & 0x10 else value != 0
            if more:
                code |= 0x20
            chars.append(chr(code + 48))
    return "".join(chars)


def _rle_size(rle: Mapping, where: str) -> tuple[int, int]:
    size = rle.get("size")
    if not isinstance(size, Sequence) or len(size) != 2:
        raise ValueError(f"{where}: RLE needs 'size': [height, width], got {size!r}")
    height, width = int(size[0]), int(size[1])
    if height < 0 or width < 0:
        raise ValueError(f"{where}: RLE size must be non-negative, got {size!r}")
    return height, width


def counts_to_mask(counts: Sequence[int], height: int, width: int, where: str = "RLE") -> np.ndarray:
    """Expand run lengths (column-major, zeros first) into an (H, W) uint8 mask."""
    runs = np.asarray(counts, dtype=np.int64)
    if runs.ndim != 1 or (runs.size and runs.min() < 0):
        raise ValueError(f"{where}: RLE counts must be a flat list of non-negative ints")
    if int(runs.sum()) != height * width:
        raise ValueError(
            f"{where}: RLE counts sum to {int(runs.sum())} but size {height}x{width} needs {height * width}"
        )
    values = (np.arange(runs.size) % 2).astype(np.uint8)
    flat = np.repeat(values, runs)
    return np.ascontiguousarray(flat.reshape(width, height).T)


def mask_to_counts(mask: np.ndarray) -> list[int]:
    """Run lengths of a binary (H, W) mask in column-major order, starting with a run of zeros."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {mask.shape}")
    flat = (mask.T.reshape(-1) > 0).astype(np.int8)
    if flat.size == 0:
        return [0]
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat[0] == 1:
        runs = [0] + runs
    return [int(r) for r in runs]


def encode_rle(mask: np.ndarray, compressed: bool = True) -> dict:
    """Encode a binary (H, W) mask as a COCO RLE dict (compressed string counts by default)."""
    mask = np.asarray(mask)
    counts = mask_to_counts(mask)
    height, width = mask.shape
    return {
        "size": [int(height), int(width)],
        "counts": counts_to_rle_string(counts) if compressed else counts,
    }


def decode_rle(rle: Mapping, where: str = "RLE") -> np.ndarray:
    """Decode a COCO RLE dict (compressed str/bytes or uncompressed list counts) into an (H, W) mask."""
    if not isinstance(rle, Mapping) or "counts" not in rle:
        raise ValueError(f"{where}: expected an RLE dict with 'size' and 'counts', got {type(rle).__name__}")
    height, width = _rle_size(rle, where)
    counts = rle["counts"]
    if isinstance(counts, (str, bytes)):
        counts = rle_string_to_counts(counts)
    elif not isinstance(counts, Sequence):
        raise ValueError(f"{where}: RLE 'counts' must be a string or a list of ints")
    return counts_to_mask(counts, height, width, where)


def _polygon_counts(xy: Sequence[float], height: int, width: int) -> list[int]:
    """Run lengths of one polygon, following pycocotools ``rleFrPoly`` step by step."""
    pts = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    # C casts (int) truncate toward zero.
    xs = np.trunc(_POLY_SCALE * pts[:, 0] + 0.5).astype(np.int64)
    ys = np.trunc(_POLY_SCALE * pts[:, 1] + 0.5).astype(np.int64)
    xs = np.append(xs, xs[0])
    ys = np.append(ys, ys[0])
    us: list[np.ndarray] = []
    vs: list[np.ndarray] = []
    for j in range(len(pts)):
        x0, x1, y0, y1 = int(xs[j]), int(xs[j + 1]), int(ys[j]), int(ys[j + 1])
        dx, dy = abs(x1 - x0), abs(y0 - y1)
        flip = (dx >= dy and x0 > x1) or (dx < dy and y0 > y1)
        if flip:
            x0, x1, y0, y1 = x1, x0, y1, y0
        if dx >= dy:
            slope = (y1 - y0) / dx if dx else 0.0
            d = np.arange(dx + 1)
            t = dx - d if flip else d
            us.append(t + x0)
            vs.append(np.trunc(y0 + slope * t + 0.5).astype(np.int64))
        else:
            slope = (x1 - x0) / dy
            d = np.arange(dy + 1)
            t = dy - d if flip else d
            vs.append(t + y0)
            us.append(np.trunc(x0 + slope * t + 0.5).astype(np.int64))
    u = np.concatenate(us)
    v = np.concatenate(vs)
    # Keep the points where the boundary crosses a pixel-centre column, downsampled to pixel units.
    prev_u, cur_u, prev_v, cur_v = u[:-1], u[1:], v[:-1], v[1:]
    moving = cur_u != prev_u
    xd = np.where(cur_u < prev_u, cur_u, cur_u - 1).astype(np.float64)
    xd = (xd + 0.5) / _POLY_SCALE - 0.5
    keep = moving & (np.floor(xd) == xd) & (xd >= 0) & (xd <= width - 1)
    yd = np.where(cur_v < prev_v, cur_v, prev_v).astype(np.float64)
    yd = (yd + 0.5) / _POLY_SCALE - 0.5
    yd = np.ceil(np.clip(yd, 0, height))
    starts = (xd[keep].astype(np.int64) * height + yd[keep].astype(np.int64)).tolist()
    starts.append(height * width)
    starts.sort()
    diffs = []
    previous = 0
    for value in starts:
        diffs.append(value - previous)
        previous = value
    runs = [diffs[0]]
    j = 1
    while j < len(diffs):
        if diffs[j] > 0:
            runs.append(diffs[j])
            j += 1
        else:  # two crossings at the same pixel cancel: merge the following run into the previous one
            j += 1
            if j < len(diffs):
                runs[-1] += diffs[j]
                j += 1
    return runs


def polygon_to_mask(xy: Sequence[float], height: int, width: int, where: str = "polygon") -> np.ndarray:
    """Rasterise one flat ``[x1, y1, x2, y2, ...]`` polygon into an (H, W) uint8 mask (pycocotools rules)."""
    if len(xy) % 2 or len(xy) < 6:
        raise ValueError(
            f"{where}: a polygon needs an even number (>= 6) of coordinates x1, y1, x2, y2...; got {len(xy)}"
        )
    values = [float(c) for c in xy]
    if not all(math.isfinite(c) for c in values):
        raise ValueError(f"{where}: polygon coordinates must be finite")
    return counts_to_mask(_polygon_counts(values, height, width), height, width, where)


def segmentation_to_mask(segmentation, height: int, width: int, where: str = "segmentation") -> np.ndarray:
    """Union mask of a COCO ``segmentation`` field: a list of polygons, an RLE dict, or a list of RLEs.

    Like refer's ``getMask`` the parts are summed and every pixel covered at least once is foreground.
    """
    if isinstance(segmentation, Mapping):
        mask = decode_rle(segmentation, where)
        if mask.shape != (height, width):
            raise ValueError(
                f"{where}: RLE size {list(mask.shape)} differs from the image size {[height, width]}"
            )
        return mask
    if not isinstance(segmentation, Sequence) or isinstance(segmentation, (str, bytes)) or not segmentation:
        raise ValueError(f"{where}: expected a non-empty list of polygons or an RLE dict")
    union = np.zeros((height, width), dtype=np.uint8)
    for k, part in enumerate(segmentation):
        if isinstance(part, Mapping):
            union |= segmentation_to_mask(part, height, width, f"{where}[{k}]")
        else:
            union |= polygon_to_mask(part, height, width, f"{where}[{k}]")
    return union
