"""Resizing like the official SharinGAN pipeline (torchvision Resize on PIL images: anti-aliased).

KITTI / vKITTI images and vKITTI depth labels: bicubic; Make3D's two image resizes: bilinear (docs/ref-sharingan.md
§2.6, §3.3). Checked three ways: hand-computed anti-aliased filter weights (independent of
Pillow), the datasets' outputs against Pillow applied to the same decoded image (within 1 grey level), and
OpenCV's un-anti-aliased resize shown to differ by far more on the same textured image.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from common.images import read_rgb
from sharingan.data.images import resize, write_rgb
from sharingan.data.kitti import KittiDepthEvalDataset, KittiStereoDataset, write_kitti_fixture
from sharingan.data.make3d import Make3DDataset, write_make3d_fixture
from sharingan.data.vkitti import VirtualKittiDataset, depth_path_for, write_depth_png_cm, write_vkitti_fixture


def textured(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Fine stripes and checks (periods 2-5 px) plus noise: the detail a shrink has to filter out."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:height, :width].astype(np.float64)
    channels = [np.sin(x * 2.1 + c) * 60 + np.cos(y * 1.3 - 2 * c) * 50 + ((x // 2 + y // 3) % 2) * 40
                for c in range(3)]
    image = np.stack(channels, -1) + 120 + rng.normal(0, 15, (height, width, 3))
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def to_grey_levels(tensor: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [-1, 1] -> (H, W, 3) values 0..255 (float)."""
    return (tensor.numpy().transpose(1, 2, 0) + 1.0) / 2.0 * 255.0


def pillow(image: np.ndarray, height: int, width: int, resample) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((width, height), resample=resample)).astype(np.float64)


def keys_cubic(distance: np.ndarray, a: float = -0.5) -> np.ndarray:
    d = np.abs(distance)
    near = (a + 2) * d**3 - (a + 3) * d**2 + 1
    far = a * d**3 - 5 * a * d**2 + 8 * a * d - 4 * a
    return np.where(d < 1, near, np.where(d < 2, far, 0.0))


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_halving_uses_the_anti_aliased_filter_worked_out_by_hand(interpolation):
    # Halving a row: output pixel i is centred at input 2i + 1; the filter is stretched by 2, so the input
    # pixels j = 2i-3 .. 2i+4 (centres j + 0.5) sit at kernel distances 1.75, 1.25, ..., 0.25, 0.25, ..., 1.75
    # (Keys' cubic with a = -0.5 reaches 2, the triangle 1). OpenCV would use the unstretched kernel.
    distances = np.array([1.75, 1.25, 0.75, 0.25, 0.25, 0.75, 1.25, 1.75])
    weights = np.maximum(1 - distances, 0) if interpolation == "bilinear" else keys_cubic(distances)
    weights = weights / weights.sum()   # bilinear: [0, 0, 1, 3, 3, 1, 0, 0] / 8
    row = np.random.default_rng(1).uniform(0, 100, (1, 64)).astype(np.float32)
    halved = resize(row, (1, 32), interpolation)
    assert halved.dtype == np.float32 and halved.shape == (1, 32)
    for i in range(2, 30):  # interior pixels (Pillow renormalises the truncated filter at the borders)
        expected = float(np.dot(weights, row[0, 2 * i - 3:2 * i + 5].astype(np.float64)))
        assert halved[0, i] == pytest.approx(expected, abs=1e-3)


def test_opencv_flags_name_pillow_filters_and_bad_inputs_are_refused():
    image = textured(40, 100)
    np.testing.assert_array_equal(resize(image, (20, 50), cv2.INTER_CUBIC), resize(image, (20, 50), "bicubic"))
    np.testing.assert_array_equal(resize(image, (20, 50), cv2.INTER_LINEAR), resize(image, (20, 50), "bilinear"))
    with pytest.raises(ValueError, match="unknown interpolation 'lanczos'"):
        resize(image, (20, 50), "lanczos")
    with pytest.raises(ValueError, match=r"\(4, 5, 2\) uint8"):
        resize(np.zeros((4, 5, 2), np.uint8), (2, 2))


def test_opencv_without_anti_aliasing_differs_from_pillow_on_a_textured_image():
    # What the old loaders did: the same resize through OpenCV is many grey levels away from Pillow's.
    image = textured(375, 1242)
    ours = resize(image, (192, 640), "bicubic").astype(np.float64)
    opencv = cv2.resize(image, (640, 192), interpolation=cv2.INTER_CUBIC).astype(np.float64)
    assert np.abs(ours - pillow(image, 192, 640, Image.Resampling.BICUBIC)).max() == 0
    assert np.abs(opencv - ours).mean() > 8


def test_kitti_images_are_resized_like_pillow_bicubic(tmp_path):
    entries = write_kitti_fixture(tmp_path, frames=1, image_size=(96, 310), points_per_frame=50)
    left, right = textured(96, 310, seed=1), textured(96, 310, seed=2)
    write_rgb(tmp_path / entries[0].left, left)
    write_rgb(tmp_path / entries[0].right, right)
    sample = KittiDepthEvalDataset(tmp_path, entries, size=(48, 128))[0]
    expected = pillow(left, 48, 128, Image.Resampling.BICUBIC)
    assert np.abs(to_grey_levels(sample["image"]) - expected).max() <= 1.0
    opencv = cv2.resize(left, (128, 48), interpolation=cv2.INTER_CUBIC).astype(np.float64)
    assert np.abs(opencv - expected).mean() > 5  # the check above can tell the two apart
    stereo = KittiStereoDataset(tmp_path, entries, size=(48, 128), augment=False)[0]
    assert np.abs(to_grey_levels(stereo["right"]) - pillow(right, 48, 128, Image.Resampling.BICUBIC)).max() <= 1.0


def test_vkitti_image_and_depth_are_resized_like_pillow_bicubic(tmp_path):
    entries = write_vkitti_fixture(tmp_path, variations=("clone",), frames=1, size=(90, 300))
    image = textured(90, 300, seed=3)
    write_rgb(tmp_path / entries[0], image)
    y, x = np.mgrid[:90, :300]
    depth_cm = 3000 + 2500 * np.sin(x * 1.7) * np.cos(y * 0.9) + 70 * y    # fine structure, 500..11700 cm
    write_depth_png_cm(tmp_path / depth_path_for(entries[0]), depth_cm)
    sample = VirtualKittiDataset(tmp_path, entries, size=(48, 128), augment=False)[0]
    assert np.abs(to_grey_levels(sample["image"]) - pillow(image, 48, 128, Image.Resampling.BICUBIC)).max() <= 1.0
    stored = np.clip(np.round(depth_cm), 0, 8000).astype(np.float32)  # capped before the resize (vkitti.py)
    expected_cm = np.clip(np.asarray(Image.fromarray(stored).resize((128, 48), Image.Resampling.BICUBIC)), 0, 8000)
    got_cm = (sample["depth"][0].numpy() + 1.0) / 2.0 * 8000.0
    assert np.abs(got_cm - expected_cm).max() < 0.05
    opencv_cm = np.clip(cv2.resize(stored, (128, 48), interpolation=cv2.INTER_CUBIC), 0, 8000)
    assert np.abs(opencv_cm - expected_cm).mean() > 100


def test_make3d_images_are_resized_like_pillow_bilinear_twice(tmp_path):
    stems = write_make3d_fixture(tmp_path, stems=("a",), image_hw=(227, 170))
    write_rgb(tmp_path / "Test134" / "img-a.jpg", textured(227, 170, seed=4))
    decoded = read_rgb(tmp_path / "Test134" / "img-a.jpg")   # JPEG is lossy: compare from the decoded pixels
    dataset = Make3DDataset(tmp_path, size=(24, 64), resize_hw=(200, 180), crop_hw=(102, 160))
    assert dataset.stems == list(stems)
    sample = dataset[0]
    bilinear = Image.Resampling.BILINEAR
    first = pillow(decoded, 200, 180, bilinear).astype(np.uint8)[49:151, 10:170]
    expected = pillow(np.ascontiguousarray(first), 24, 64, bilinear)
    assert np.abs(to_grey_levels(sample["image"]) - expected).max() <= 1.0
    opencv = cv2.resize(np.ascontiguousarray(cv2.resize(decoded, (180, 200))[49:151, 10:170]), (64, 24))
    assert np.abs(opencv.astype(np.float64) - expected).mean() > 5
    assert sample["gt"].shape == (102, 160)
