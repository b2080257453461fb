"""common.images: complete decoding with errors naming the file, and noted conversions to 8-bit RGB."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from common.images import ImageReadError, load_image_rgb, read_image, to_rgb8


@pytest.fixture
def rgb():
    return np.random.default_rng(0).integers(0, 256, (12, 16, 3), dtype=np.uint8)


def test_8bit_rgb_png_and_jpeg_read_without_a_note(tmp_path, rgb):
    Image.fromarray(rgb).save(tmp_path / "a.png")
    image, note = load_image_rgb(tmp_path / "a.png")
    assert np.array_equal(image, rgb) and note is None
    Image.fromarray(rgb).save(tmp_path / "a.jpg", quality=95)
    image, note = load_image_rgb(tmp_path / "a.jpg")
    assert image.shape == (12, 16, 3) and image.dtype == np.uint8 and note is None


def test_greyscale_is_repeated_with_a_note(tmp_path):
    grey = np.arange(12 * 16, dtype=np.uint8).reshape(12, 16)
    Image.fromarray(grey).save(tmp_path / "g.png")
    image, note = load_image_rgb(tmp_path / "g.png")
    assert np.array_equal(image, np.repeat(grey[..., None], 3, axis=2))
    assert "g.png" in note and "greyscale" in note


def test_opaque_alpha_is_dropped_and_transparency_composited(tmp_path, rgb):
    alpha = np.full((12, 16), 255, np.uint8)
    Image.fromarray(np.dstack([rgb, alpha])).save(tmp_path / "opaque.png")
    image, note = load_image_rgb(tmp_path / "opaque.png")
    assert np.array_equal(image, rgb) and "alpha channel dropped" in note
    alpha[:, :4] = 0
    Image.fromarray(np.dstack([rgb, alpha])).save(tmp_path / "cut.png")
    image, note = load_image_rgb(tmp_path / "cut.png")
    assert (image[:, :4] == 255).all() and np.array_equal(image[:, 4:], rgb[:, 4:])
    assert "cut.png" in note and "25.0 %" in note and "composited" in note
    image, _ = load_image_rgb(tmp_path / "cut.png", background=(0, 0, 0))
    assert (image[:, :4] == 0).all()


def test_16bit_grey_and_colour_png_keep_full_precision_then_scale(tmp_path):
    grey = np.array([[0, 257, 65535], [32768, 514, 1000]], dtype=np.uint16)
    assert cv2.imwrite(str(tmp_path / "g16.png"), grey)
    raw, mode = read_image(tmp_path / "g16.png")
    assert raw.dtype == np.uint16 and np.array_equal(raw, grey) and "16-bit" in mode
    image, note = load_image_rgb(tmp_path / "g16.png")
    assert image[0, :, 0].tolist() == [0, 1, 255] and image[1, 0, 0] == 128
    assert "g16.png" in note and "16-bit" in note and "greyscale" in note
    colour = np.zeros((2, 3, 3), np.uint16)
    colour[..., 0] = 65535  # red in RGB order (OpenCV writes BGR)
    colour[0, 0, 2] = 1000
    assert cv2.imwrite(str(tmp_path / "c16.png"), colour[..., ::-1])
    raw, _ = read_image(tmp_path / "c16.png")
    assert raw[0, 0].tolist() == [65535, 0, 1000]
    image, note = load_image_rgb(tmp_path / "c16.png")
    assert image[0, 0].tolist() == [255, 0, 4] and "greyscale" not in note


def test_16bit_depth_like_image_is_flagged(tmp_path):
    assert cv2.imwrite(str(tmp_path / "depth.png"), np.full((4, 4), 3000, np.uint16))
    _, note = load_image_rgb(tmp_path / "depth.png")
    assert "depth or label map" in note


def test_palette_and_bilevel_images(tmp_path, rgb):
    Image.fromarray(rgb).convert("P").save(tmp_path / "p.png")
    image, note = load_image_rgb(tmp_path / "p.png")
    assert image.shape == (12, 16, 3) and "P image converted" in note
    Image.fromarray(rgb[..., 0] > 128).save(tmp_path / "b.png")
    image, note = load_image_rgb(tmp_path / "b.png")
    assert set(np.unique(image)) <= {0, 255} and "greyscale" in note


@pytest.mark.parametrize("suffix", ["png", "jpg"])
def test_truncated_files_are_refused_naming_the_file(tmp_path, rgb, suffix):
    big = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(big).save(tmp_path / f"whole.{suffix}")
    data = (tmp_path / f"whole.{suffix}").read_bytes()
    (tmp_path / f"cut.{suffix}").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match=rf"cut\.{suffix}.*(truncated|corrupt)"):
        load_image_rgb(tmp_path / f"cut.{suffix}")


def test_corrupt_missing_and_non_image_files(tmp_path, rgb):
    Image.fromarray(rgb).save(tmp_path / "a.png")
    data = bytearray((tmp_path / "a.png").read_bytes())
    start = data.index(b"IDAT") + 8
    data[start:start + 40] = bytes(40)  # zlib stream destroyed
    (tmp_path / "bad.png").write_bytes(bytes(data))
    with pytest.raises(ImageReadError, match=r"bad\.png"):
        load_image_rgb(tmp_path / "bad.png")
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(ImageReadError, match=r"notes\.png.*not a PNG/JPEG"):
        load_image_rgb(tmp_path / "notes.png")
    with pytest.raises(FileNotFoundError, match=r"missing\.png"):
        load_image_rgb(tmp_path / "missing.png")
    with pytest.raises(FileNotFoundError, match="a folder"):
        load_image_rgb(tmp_path)
    assert issubclass(ImageReadError, ValueError)


def test_to_rgb8_rejects_other_arrays():
    with pytest.raises(ValueError, match="float32"):
        to_rgb8(np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match="5"):
        to_rgb8(np.zeros((2, 2, 5), np.uint8))
