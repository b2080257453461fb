"""Reading user-supplied images safely: a clear error for a missing, corrupt or truncated file, and a note
for every conversion made on the way to 8-bit RGB.

    image, note = load_image_rgb("photo.png")   # (H, W, 3) uint8 RGB
    if note:
        print(f"note: {note}")

`read_image` decodes the whole file (a truncated PNG or JPEG is an error, never a partly grey picture) and
keeps the pixels as stored: uint8 or uint16, greyscale (H, W), grey + alpha (H, W, 2), RGB (H, W, 3) or
RGBA (H, W, 4). `load_image_rgb` turns any of these into 8-bit RGB:

- greyscale: the grey channel repeated three times;
- an alpha channel: dropped when every pixel is opaque, otherwise composited on `background` (white);
- 16 bits per channel: value / 257, rounded (0 -> 0, 65535 -> 255); the note says when the image uses only a
  small part of the 16-bit range (then it is probably a depth or label map, not a photo);
- palette, CMYK and other colour modes: converted by Pillow.

`read_rgb` is the one image reader of the datasets of both chapters (issue 14): `pixels="uint8"` gives
`load_image_rgb`'s (H, W, 3) uint8 RGB (depth and Chapter 3 datasets), `pixels="unit_float"` gives float32 RGB
in [0, 1] at the file's own precision (the face datasets). It never resizes: each dataset resizes with its own
filter afterwards (`sharingan.data.images.resize`, Pillow as the official depth code; `cv2` for faces).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal, NamedTuple

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOUR_MODES = ("CMYK", "YCbCr", "LAB", "HSV")


class ImageReadError(ValueError):
    """An image file exists but cannot be decoded completely (corrupt, truncated or not an image)."""


class LoadedImage(NamedTuple):
    image: np.ndarray  # (H, W, 3) uint8 RGB
    note: str | None  # what was converted, or None when the file already was 8-bit RGB


def _png_bit_depth(path: Path) -> int | None:
    with open(path, "rb") as file:
        header = file.read(26)
    if len(header) == 26 and header.startswith(_PNG_SIGNATURE) and header[12:16] == b"IHDR":
        return header[24]
    return None


def read_image(path: str | Path, what: str = "image") -> tuple[np.ndarray, str]:
    """Decode a whole image file -> (pixels as stored, Pillow mode of the file).

    Raises FileNotFoundError for a missing path and ImageReadError (a ValueError) for a file that is not a
    complete image; both messages name the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}" + (" (a folder, not a file)" if path.is_dir() else ""))
    try:
        with Image.open(path) as image:
            mode = image.mode
            image.load()  # decodes everything: truncation and corrupt data surface here
            if _png_bit_depth(path) == 16:
                array = None  # Pillow keeps 8 bits of 16-bit colour PNGs; OpenCV keeps all 16
            elif mode == "1":
                array = np.asarray(image.convert("L"))
            elif mode == "P":
                array = np.asarray(image.convert("RGBA" if "transparency" in image.info else "RGB"))
            elif mode == "PA":
                array = np.asarray(image.convert("RGBA"))
            elif mode in ("L", "LA", "RGB", "RGBA"):
                array = np.asarray(image)
            elif mode.startswith("I;16"):
                array = np.asarray(image).astype(np.uint16)
            elif mode == "I":
                array = np.asarray(image)
                if array.size and (array.min() < 0 or array.max() > 65535):
                    raise ImageReadError(f"cannot read {what} {path}: 32-bit integer pixels "
                                         f"{array.min()}..{array.max()} do not fit 16 bits")
                array = array.astype(np.uint16)
            elif mode in _COLOUR_MODES:
                array = np.asarray(image.convert("RGB"))
            else:
                raise ImageReadError(f"cannot read {what} {path}: unsupported pixel mode {mode!r} "
                                     "(expected an 8- or 16-bit PNG or a JPEG)")
    except UnidentifiedImageError as error:
        raise ImageReadError(f"cannot read {what} {path}: not a PNG/JPEG image or corrupt ({error})") from error
    except ImageReadError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise ImageReadError(f"cannot read {what} {path}: corrupt or truncated file ({error})") from error
    if array is None:
        array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if array is None or array.dtype != np.uint16:
            raise ImageReadError(f"cannot read {what} {path}: corrupt 16-bit PNG")
        if array.ndim == 3:
            code = cv2.COLOR_BGRA2RGBA if array.shape[2] == 4 else cv2.COLOR_BGR2RGB
            array = cv2.cvtColor(array, code)
        mode = "16-bit " + {2: "L", 3: "RGB", 4: "RGBA"}.get(array.ndim if array.ndim == 2 else array.shape[2], "?")
    return np.ascontiguousarray(array), mode


def to_rgb8(array: np.ndarray, background: tuple[int, int, int] = (255, 255, 255)) -> tuple[np.ndarray, list[str]]:
    """Pixels as returned by `read_image` -> ((H, W, 3) uint8 RGB, list of conversions made)."""
    notes = []
    array = np.asarray(array)
    if array.dtype == np.uint16:
        high = int(array.max()) if array.size else 0
        note = f"16-bit image (values 0..{high}) scaled to 8 bits (value / 257)"
        if high < 4096:
            note += "; it uses less than 1/16 of the 16-bit range, so it may be a depth or label map, not a photo"
        notes.append(note)
        array = np.round(array.astype(np.float64) / 257.0).astype(np.uint8)
    elif array.dtype != np.uint8:
        raise ValueError(f"to_rgb8: expected uint8 or uint16 pixels, got {array.dtype}")
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"to_rgb8: expected (H, W) or (H, W, 1..4) pixels, got {array.shape}")
    channels = array.shape[2]
    colour, alpha = (array[..., :-1], array[..., -1]) if channels in (2, 4) else (array, None)
    if colour.shape[2] == 1:
        notes.append("greyscale image converted to RGB (grey channel repeated)")
        colour = np.repeat(colour, 3, axis=2)
    if alpha is not None:
        transparent = float(np.mean(alpha < 255)) if alpha.size else 0.0
        if transparent == 0.0:
            notes.append("alpha channel dropped (every pixel opaque)")
        else:
            weight = alpha.astype(np.float64)[..., None] / 255.0
            colour = np.round(colour * weight + np.asarray(background, np.float64) * (1.0 - weight)).astype(np.uint8)
            notes.append(f"transparent image ({100 * transparent:.1f} % of pixels not opaque) composited on the "
                         f"background {tuple(int(v) for v in background)}")
    return np.ascontiguousarray(colour, dtype=np.uint8), notes


def load_image_rgb(path: str | Path, background: tuple[int, int, int] = (255, 255, 255),
                   what: str = "image") -> LoadedImage:
    """Read a PNG/JPEG (any mode, 8 or 16 bits) as (H, W, 3) uint8 RGB, with a note naming the file and the
    conversions made (None for an 8-bit RGB file). Errors name the file (see `read_image`)."""
    array, mode = read_image(path, what)
    rgb, notes = to_rgb8(array, background)
    if mode in ("1", "P", "PA") or mode in _COLOUR_MODES:
        notes.insert(0, f"{mode} image converted to RGB")
    return LoadedImage(rgb, f"{path}: " + "; ".join(notes) if notes else None)


def read_rgb(path: str | Path, what: str = "image", *, pixels: Literal["uint8", "unit_float"] = "uint8",
             log: logging.Logger | None = None) -> np.ndarray:
    """Read a PNG/JPEG as RGB pixels; missing, corrupt or truncated files raise errors naming the file.

    pixels="uint8": (H, W, 3) uint8 as `load_image_rgb` (greyscale repeated, transparency composited on white,
    16 bits -> value / 257 rounded).
    pixels="unit_float": (H, W, 3) float32 in [0, 1] = stored value / 255 (8-bit) or / 65535 (16-bit), keeping
    16-bit precision; greyscale repeated, an alpha channel dropped (not composited).
    log: when given, the conversion note (see `load_image_rgb`) is logged on it at INFO level.
    """
    if pixels == "uint8":
        image, note = load_image_rgb(path, what=what)
    elif pixels == "unit_float":
        array, _ = read_image(path, what)
        scale = 65535.0 if array.dtype == np.uint16 else 255.0
        notes = []
        if array.ndim == 2:
            array = array[..., None]
        if array.shape[2] in (2, 4):
            array = array[..., :-1]
            notes.append("alpha channel dropped")
        if array.shape[2] == 1:
            array = np.repeat(array, 3, axis=2)
            notes.append("greyscale image converted to RGB (grey channel repeated)")
        image = array.astype(np.float32) / scale
        note = f"{path}: " + "; ".join(notes) if notes else None
    else:
        raise ValueError(f"read_rgb({path}): pixels must be 'uint8' or 'unit_float', got {pixels!r}")
    if log is not None and note:
        log.info("%s", note)
    return image


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def list_images(path: str | Path) -> list[Path]:
    """An image file -> [it]; a folder -> its images (by suffix, sorted); an error naming the path otherwise.
    Used by the predict commands of both chapters."""
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder {path}")
        return images
    raise FileNotFoundError(f"image or folder not found: {path}")
