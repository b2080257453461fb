"""Bad image inputs: corrupt or truncated files are named, image/label size mismatches are named, and the
predict commands convert greyscale, RGBA and 16-bit images (with a note) instead of failing or saturating."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from common.config import load_config
from common.images import ImageReadError, read_rgb
from sharingan.data.celeba import CelebAImages, write_celeba_fixture
from sharingan.data.photoface import PhotofaceDataset, sibling, write_photoface_fixture
from sharingan.data.sfsnet_synthetic import read_mask, synthetic_dataset, write_sfsnet_synthetic_fixture

ROOT = Path(__file__).resolve().parents[2]


def truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def photo(height: int = 40, width: int = 48, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def odd_images(folder: Path) -> dict[str, Path]:
    """A greyscale PNG, an RGBA PNG with a transparent strip and a 16-bit colour PNG of one scene."""
    folder.mkdir(parents=True, exist_ok=True)
    rgb = photo()
    Image.fromarray(rgb[..., 0]).save(folder / "grey.png")
    alpha = np.full(rgb.shape[:2], 255, np.uint8)
    alpha[:, :8] = 0
    Image.fromarray(np.dstack([rgb, alpha])).save(folder / "rgba.png")
    cv2.imwrite(str(folder / "deep.png"), (rgb[..., ::-1].astype(np.uint16) * 257))
    return {"grey": folder / "grey.png", "rgba": folder / "rgba.png", "deep": folder / "deep.png"}


# -------------------------------------------------------------------------------------- face data readers
@pytest.mark.parametrize("suffix", ["png", "jpg"])
def test_face_reader_refuses_truncated_files(tmp_path, suffix):
    path = tmp_path / f"face.{suffix}"
    Image.fromarray(photo(64, 64)).save(path)
    truncate(path)  # OpenCV alone would return a half-grey JPEG without an error
    with pytest.raises(ImageReadError, match=rf"face\.{suffix}.*(truncated|corrupt)"):
        read_rgb(path, pixels="unit_float")
    with pytest.raises(ImageReadError, match=rf"face\.{suffix}"):
        read_mask(path)


def test_celeba_truncated_jpeg_is_named(tmp_path):
    write_celeba_fixture(tmp_path, counts=(2, 1, 1))
    dataset = CelebAImages(tmp_path, split="train", image_size=32)
    bad = truncate(tmp_path / "img_align_celeba" / dataset.names[1])
    assert dataset[0]["image"].shape == (3, 32, 32)
    with pytest.raises(ImageReadError, match=bad.name):
        dataset[1]


def test_synthetic_face_with_a_normal_map_of_another_size_is_named(tmp_path):
    write_sfsnet_synthetic_fixture(tmp_path, 1, image_size=16)
    normal = next(tmp_path.rglob("*_normal_*.png"))
    cv2.imwrite(str(normal), np.full((16, 20, 3), 128, np.uint8))
    dataset = synthetic_dataset(tmp_path, split="all", image_size=16)
    with pytest.raises(ValueError, match=rf"normal {normal}.* is 16x20") as error:
        dataset[0]
    assert "image" in str(error.value) and "16x16" in str(error.value)


def test_photoface_mask_of_another_size_is_named(tmp_path):
    write_photoface_fixture(tmp_path, subjects=("1001", "2001"), test_subjects=1, image_size=24)
    dataset = PhotofaceDataset(tmp_path, split="test", image_size=24)
    mask = sibling(tmp_path / dataset.entries[0].relative, "mask")
    cv2.imwrite(str(mask), np.full((30, 24), 255, np.uint8))
    with pytest.raises(ValueError, match=rf"mask {mask} is 30x24"):
        dataset[0]


# ------------------------------------------------------------------------------------ face predict command
@pytest.fixture(scope="module")
def face_model():
    from sharingan.tasks import load_task

    task = load_task("normals")
    cfg = load_config(ROOT / "experiments" / "chapter2" / "faces_tiny.yaml")
    torch.manual_seed(0)
    return task, cfg, task.build_networks(cfg)


def test_face_predict_converts_grey_rgba_and_16bit_with_a_note(face_model, tmp_path, capsys):
    task, cfg, networks = face_model
    inputs = odd_images(tmp_path / "in")
    written = task.predict(cfg, networks, list(inputs.values()), tmp_path / "out")
    notes = capsys.readouterr()
    text = notes.out + notes.err
    assert "grey.png" in text and "greyscale" in text
    assert "rgba.png" in text and "composited" in text
    assert "deep.png" in text and "16-bit" in text
    assert {p.name for p in written} >= {f"{name}_normals.png" for name in inputs}


def test_face_predict_refuses_a_truncated_image_and_writes_nothing_for_it(face_model, tmp_path):
    task, cfg, networks = face_model
    bad = tmp_path / "in" / "cut.jpg"
    bad.parent.mkdir()
    Image.fromarray(photo(64, 64)).save(bad)
    truncate(bad)
    with pytest.raises(ImageReadError, match=r"cut\.jpg.*(truncated|corrupt)"):
        task.predict(cfg, networks, [bad], tmp_path / "out")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


# ----------------------------------------------------------------------------- Chapter 3 reader and predict
class MeanBrightness(nn.Module):
    """A stand-in segmenter: foreground where the (resized) image is bright; it ignores the prompt."""

    def forward(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        return images.mean(1, keepdim=True) * 10.0


def test_chapter3_reader_keeps_16bit_range_and_refuses_truncated_files(tmp_path):
    ramp = np.array([[0, 1000, 30000, 65535]], dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "ramp.png"), ramp)
    assert read_rgb(tmp_path / "ramp.png")[0, :, 0].tolist() == [0, 4, 117, 255]  # not saturated at 255
    Image.fromarray(photo()).save(tmp_path / "cut.jpg")
    with pytest.raises(ImageReadError, match=r"cut\.jpg"):
        read_rgb(truncate(tmp_path / "cut.jpg"))


def test_chapter3_predict_converts_odd_images_and_refuses_corrupt_ones(tmp_path):
    from ldznet.predict import predict

    inputs = odd_images(tmp_path / "in")
    written = predict(MeanBrightness(), list(inputs.values()), ["a thing"], tmp_path / "out", image_size=64)
    assert len(written) == 9
    for name in inputs:
        mask = cv2.imread(str(tmp_path / "out" / f"{name}__a_thing_mask.png"), cv2.IMREAD_UNCHANGED)
        assert mask.shape == (40, 48)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "broken.png").write_bytes(inputs["rgba"].read_bytes()[:200])
    with pytest.raises(ImageReadError, match=r"broken\.png"):
        predict(MeanBrightness(), [tmp_path / "bad" / "broken.png"], ["a thing"], tmp_path / "bad_out")
    assert not (tmp_path / "bad_out").exists()


def test_chapter3_predict_prints_conversion_notes_and_refuses_an_empty_prompt(tmp_path, capsys):
    from ldznet.predict import predict

    inputs = odd_images(tmp_path / "in")
    predict(MeanBrightness(), [inputs["grey"]], ["a thing"], tmp_path / "out", image_size=64)
    assert "greyscale" in capsys.readouterr().out
    with pytest.raises(ValueError, match="empty prompt"):
        predict(MeanBrightness(), [inputs["grey"]], ["a thing", "  "], tmp_path / "empty_out", image_size=64)
    assert not (tmp_path / "empty_out").exists()
