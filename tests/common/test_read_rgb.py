"""`common.images.read_rgb`, the one image reader of both chapters (issue 14 item 3), returns bit for bit what
the three readers it replaced returned at each call site. The old readers are kept here, frozen, as the
reference: depth datasets (uint8), Chapter 3 datasets (uint8, note logged), face datasets (float in [0, 1])."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest
from PIL import Image

from common.images import load_image_rgb, read_image, read_rgb
from sharingan.data.images import resize


def old_depth_read_rgb(path, what="image"):  # sharingan.data.images.read_rgb before issue 14
    return load_image_rgb(path, what=what).image


def old_chapter3_read_rgb(path, log):  # ldznet.data.transforms.read_rgb before issue 14
    image, note = load_image_rgb(path)
    if note:
        log.info("%s", note)
    return image


def old_face_read_rgb(path, image_size=None, interpolation=cv2.INTER_AREA):  # sfsnet_synthetic.read_rgb before
    array, _ = read_image(path, "image file")
    scale = 65535.0 if array.dtype == np.uint16 else 255.0
    if array.ndim == 2:
        array = array[..., None]
    if array.shape[2] in (2, 4):
        array = array[..., :-1]
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    array = array.astype(np.float32) / scale
    if image_size is not None and array.shape[:2] != (image_size, image_size):
        array = cv2.resize(array, (image_size, image_size), interpolation=interpolation)
    return array


@pytest.fixture(scope="module")
def fixture_images(tmp_path_factory):
    """One file per pixel format the readers meet: 8-bit RGB PNG and JPEG, grey, grey + alpha, RGBA (opaque and
    partly transparent), palette (with and without transparency), 1-bit, 16-bit grey / RGB / RGBA."""
    folder = tmp_path_factory.mktemp("formats")
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (23, 31, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, (23, 31), dtype=np.uint8)
    alpha = rng.integers(0, 256, (23, 31), dtype=np.uint8)
    paths = {}

    def save(name, image, **kwargs):
        paths[name] = folder / name
        image.save(paths[name], **kwargs)

    save("rgb.png", Image.fromarray(rgb))
    save("rgb.jpg", Image.fromarray(rgb), quality=90)
    save("grey.png", Image.fromarray(grey))
    save("grey_alpha.png", Image.fromarray(np.stack([grey, alpha], -1)))  # mode LA
    save("rgba.png", Image.fromarray(np.dstack([rgb, alpha])))
    save("rgba_opaque.png", Image.fromarray(np.dstack([rgb, np.full_like(alpha, 255)])))
    save("palette.png", Image.fromarray(rgb).quantize(16))
    transparent = Image.fromarray(rgb).quantize(16)
    transparent.info["transparency"] = 3
    save("palette_transparent.png", transparent, transparency=3)
    save("bits.png", Image.fromarray(grey > 127))
    for name, array in {"grey16.png": rng.integers(0, 65536, (23, 31), dtype=np.uint16),
                        "rgb16.png": rng.integers(0, 65536, (23, 31, 3), dtype=np.uint16),
                        "rgba16.png": rng.integers(0, 65536, (23, 31, 4), dtype=np.uint16)}.items():
        paths[name] = folder / name
        bgr = array if array.ndim == 2 else cv2.cvtColor(array, cv2.COLOR_RGB2BGR if array.shape[2] == 3
                                                         else cv2.COLOR_RGBA2BGRA)
        assert cv2.imwrite(str(paths[name]), bgr)
    return paths


def _identical(new, old) -> bool:
    """Same dtype, same shape, same values."""
    return new.dtype == old.dtype and new.shape == old.shape and np.array_equal(new, old)


def test_uint8_reader_matches_the_depth_reader_including_pillow_resizing(fixture_images):
    for path in fixture_images.values():
        assert _identical(read_rgb(path, "KITTI image"), old_depth_read_rgb(path, "KITTI image")), path
        for interpolation in ("bicubic", "bilinear"):  # the call sites' Pillow resize (issue 12 parity)
            assert _identical(resize(read_rgb(path), (12, 40), interpolation),
                              resize(old_depth_read_rgb(path), (12, 40), interpolation)), (path, interpolation)


def test_uint8_reader_matches_the_chapter3_reader_and_logs_the_same_note(fixture_images, caplog):
    log = logging.getLogger("ldznet.data.transforms")
    for path in fixture_images.values():
        with caplog.at_level(logging.INFO, logger=log.name):
            caplog.clear()
            old = old_chapter3_read_rgb(path, log)
            old_records = [(r.name, r.levelno, r.getMessage()) for r in caplog.records]
            caplog.clear()
            new = read_rgb(path, log=log)
            new_records = [(r.name, r.levelno, r.getMessage()) for r in caplog.records]
        assert _identical(new, old), path
        assert new_records == old_records
    assert any(name == "rgba.png" for name in fixture_images)  # a file whose note is logged is among them


def test_unit_float_reader_matches_the_face_reader(fixture_images):
    for path in fixture_images.values():
        new, old = read_rgb(path, "image file", pixels="unit_float"), old_face_read_rgb(path)
        assert _identical(new, old), path
        assert new.dtype == np.float32 and 0.0 <= new.min() and new.max() <= 1.0
    # 16-bit precision kept: value / 65535, not value / 257 rounded to 8 bits
    stored, _ = read_image(fixture_images["rgb16.png"])
    assert np.array_equal(read_rgb(fixture_images["rgb16.png"], pixels="unit_float"),
                          stored.astype(np.float32) / 65535.0)


def test_unit_float_drops_alpha_while_uint8_composites_it(fixture_images):
    path = fixture_images["rgba.png"]
    stored, _ = read_image(path)
    assert np.array_equal(read_rgb(path, pixels="unit_float"), stored[..., :3].astype(np.float32) / 255.0)
    half = stored[..., 3] < 255
    assert not np.array_equal(read_rgb(path)[half], stored[..., :3][half])  # composited on white


def test_reader_errors_name_the_file_and_the_option(tmp_path, fixture_images):
    with pytest.raises(FileNotFoundError, match="face image not found: .*missing.png"):
        read_rgb(tmp_path / "missing.png", "face image", pixels="unit_float")
    with pytest.raises(ValueError, match="pixels must be 'uint8' or 'unit_float', got 'float'"):
        read_rgb(fixture_images["rgb.png"], pixels="float")
