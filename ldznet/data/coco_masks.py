"""COCO-style masks of RefCOCO, RefCOCO+ and G-Ref (dissertation §3.4.3) through pycocotools, as refer does.

refer's ``getMask`` (docs/ref-ldznet.md §5) turns an annotation's ``segmentation`` into a mask with
``pycocotools.mask``: polygons (a list of flat ``[x1, y1, x2, y2, ...]`` lists) and uncompressed RLEs
(``{"size": [H, W], "counts": [ints]}``, ``iscrowd: 1``) go through ``frPyObjects``, compressed RLEs
(``"counts": str``) are used as they are, then ``decode`` and the parts are summed. Here the parts are
merged (``merge``, a union), so every pixel covered at least once is foreground, and masks are (H, W) uint8
in {0, 1}.

This module only checks its input before the library sees it, so that a bad annotation gets an error naming
it: pycocotools would read a 4-number polygon as a box, and decode a compressed RLE whose runs fall short of
H x W into uninitialised memory. `rle_string_to_counts` reads the run lengths of a compressed string for that
check (and for the tests); the decoding itself is pycocotools'.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
from pycocotools import mask as coco_mask


def _decode(rles) -> np.ndarray:
    """``pycocotools.mask.decode``; its numpy-2 DeprecationWarning (the ``__array__`` copy keyword, on every
    call of 2.0.11) is silenced: nothing to act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="__array__ implementation doesn't accept a copy keyword",
                                category=DeprecationWarning)
        return coco_mask.decode(rles)


def rle_string_to_counts(text: str | bytes) -> list[int]:
    """Run lengths of a compressed COCO RLE string (the format of pycocotools ``rleFrString``).

    Each count is 5 data bits per character (chars 48..111) plus a continuation bit; from index 3 on it is
    stored as a difference to the count two places before.
    """
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


def _rle_size(rle: Mapping, where: str) -> tuple[int, int]:
    size = rle.get("size")
    if not isinstance(size, Sequence) or len(size) != 2:
        raise ValueError(f"{where}: RLE needs 'size': [height, width], got {size!r}")
    height, width = int(size[0]), int(size[1])
    if height < 0 or width < 0:
        raise ValueError(f"{where}: RLE size must be non-negative, got {size!r}")
    return height, width


def _check_counts(counts: Sequence[int], height: int, width: int, where: str) -> None:
    runs = np.asarray(counts, dtype=np.int64)
    if runs.ndim != 1 or (runs.size and runs.min() < 0):
        raise ValueError(f"{where}: RLE counts must be a flat list of non-negative ints")
    if int(runs.sum()) != height * width:
        raise ValueError(
            f"{where}: RLE counts sum to {int(runs.sum())} but size {height}x{width} needs {height * width}"
        )


def mask_to_counts(mask: np.ndarray) -> list[int]:
    """Run lengths of a binary (H, W) mask in column-major order, starting with a run of zeros (the
    uncompressed COCO RLE of ``iscrowd`` annotations; pycocotools only writes compressed ones)."""
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
    """A binary (H, W) mask as a COCO RLE dict: compressed (``pycocotools.mask.encode``, counts as str) or
    uncompressed (a list of run lengths)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {mask.shape}")
    height, width = mask.shape
    if not compressed:
        return {"size": [int(height), int(width)], "counts": mask_to_counts(mask)}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="__array__ implementation", category=DeprecationWarning)
        rle = coco_mask.encode(np.asfortranarray((mask > 0).astype(np.uint8)))
    return {"size": [int(height), int(width)], "counts": rle["counts"].decode("ascii")}


def _library_rle(rle: Mapping, where: str) -> dict:
    """A checked RLE in the form pycocotools decodes (compressed counts as bytes)."""
    if not isinstance(rle, Mapping) or "counts" not in rle:
        raise ValueError(f"{where}: expected an RLE dict with 'size' and 'counts', got {type(rle).__name__}")
    height, width = _rle_size(rle, where)
    counts = rle["counts"]
    if isinstance(counts, (str, bytes)):
        _check_counts(rle_string_to_counts(counts), height, width, where)
        return {"size": [height, width], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    if not isinstance(counts, Sequence):
        raise ValueError(f"{where}: RLE 'counts' must be a string or a list of ints")
    _check_counts(counts, height, width, where)
    return coco_mask.frPyObjects({"size": [height, width], "counts": [int(c) for c in counts]}, height, width)


def decode_rle(rle: Mapping, where: str = "RLE") -> np.ndarray:
    """Decode a COCO RLE dict (compressed str/bytes or uncompressed list counts) into an (H, W) mask."""
    return np.ascontiguousarray(_decode(_library_rle(rle, where)), dtype=np.uint8)


def _check_polygon(xy: Sequence[float], where: str) -> list[float]:
    if isinstance(xy, (str, bytes)) or not isinstance(xy, Sequence):
        raise ValueError(f"{where}: a polygon must be a flat list x1, y1, x2, y2, ...; got {type(xy).__name__}")
    if len(xy) % 2 or len(xy) < 6:
        raise ValueError(
            f"{where}: a polygon needs an even number (>= 6) of coordinates x1, y1, x2, y2...; got {len(xy)}"
        )
    values = [float(c) for c in xy]
    if not all(math.isfinite(c) for c in values):
        raise ValueError(f"{where}: polygon coordinates must be finite")
    return values


def polygon_to_mask(xy: Sequence[float], height: int, width: int, where: str = "polygon") -> np.ndarray:
    """Rasterise one flat ``[x1, y1, x2, y2, ...]`` polygon into an (H, W) uint8 mask (pycocotools
    ``frPyObjects`` + ``decode``: coordinates name pixel corners, a pixel is inside when its centre is)."""
    rles = coco_mask.frPyObjects([_check_polygon(xy, where)], int(height), int(width))
    return np.ascontiguousarray(_decode(rles)[:, :, 0], dtype=np.uint8)


def segmentation_to_mask(segmentation, height: int, width: int, where: str = "segmentation") -> np.ndarray:
    """Union mask of a COCO ``segmentation`` field: a list of polygons, an RLE dict, or a list of RLEs.

    Like refer's ``getMask`` (pycocotools ``frPyObjects`` -> ``decode``) with the parts unioned
    (``merge``): every pixel covered at least once is foreground.
    """
    height, width = int(height), int(width)
    if isinstance(segmentation, Mapping):
        mask = decode_rle(segmentation, where)
        if mask.shape != (height, width):
            raise ValueError(
                f"{where}: RLE size {list(mask.shape)} differs from the image size {[height, width]}"
            )
        return mask
    if not isinstance(segmentation, Sequence) or isinstance(segmentation, (str, bytes)) or not segmentation:
        raise ValueError(f"{where}: expected a non-empty list of polygons or an RLE dict")
    rles = []
    for k, part in enumerate(segmentation):
        if isinstance(part, Mapping):
            rle = _library_rle(part, f"{where}[{k}]")
            if list(rle["size"]) != [height, width]:
                raise ValueError(
                    f"{where}[{k}]: RLE size {list(rle['size'])} differs from the image size {[height, width]}"
                )
            rles.append(rle)
        else:
            rles.extend(coco_mask.frPyObjects([_check_polygon(part, f"{where}[{k}]")], height, width))
    merged = coco_mask.merge(rles, intersect=False) if len(rles) > 1 else rles[0]
    return np.ascontiguousarray(_decode(merged), dtype=np.uint8)
