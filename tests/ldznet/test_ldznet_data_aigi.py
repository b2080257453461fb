"""AIGI layout, loader and converter on tiny fixtures."""

import json

import numpy as np
import pytest
from PIL import Image

from ldznet.data.aigi import AIGIDataset, keep_aspect_size, main, read_binary_mask, write_aigi_sample


def _image(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def _box_mask(height, width, y0, y1, x0, x1):
    mask = np.zeros((height, width), np.uint8)
    mask[y0:y1, x0:x1] = 1
    return mask


def test_write_and_load(tmp_path):
    root = tmp_path / "aigi"
    bear = _box_mask(40, 24, 5, 20, 2, 10)
    fish = _box_mask(40, 24, 30, 38, 0, 24)
    write_aigi_sample(root, "0001", _image(40, 24), [("Teddy Bear", bear), ("Fish", fish)])
    write_aigi_sample(root, "0002", _image(16, 16, 1), [("Bald Eagle", _box_mask(16, 16, 0, 8, 0, 8))])
    annotations = json.loads((root / "annotations.json").read_text())
    assert annotations["format"] == "aigi-v1" and len(annotations["samples"]) == 3
    assert annotations["samples"][0] == {
        "image_id": "0001",
        "image": "images/0001.png",
        "mask": "masks/0001/00.png",
        "prompt": "Teddy Bear",
    }
    assert np.array_equal(read_binary_mask(root / "masks/0001/00.png"), bear)
    dataset = AIGIDataset(root, image_size=32)
    assert len(dataset) == 3
    sample = dataset[1]
    assert sample["prompt"] == "Fish" and sample["image_id"] == "0001" and sample["sample_index"] == 1
    assert sample["image"].shape == (3, 32, 32) and sample["mask"].shape == (1, 32, 32)
    assert abs(sample["mask"].mean().item() - fish.mean()) < 0.05
    assert AIGIDataset(root, image_size=32, prompt_mode="template")[2]["prompt"] == "a photo of a Bald Eagle."
    assert len(AIGIDataset(root, limit=2)) == 2
    # Rewriting an image replaces its entries instead of duplicating them.
    write_aigi_sample(root, "0002", _image(16, 16, 1), [("Eagle", _box_mask(16, 16, 0, 8, 0, 8))])
    assert [s["prompt"] for s in AIGIDataset(root).samples] == ["Teddy Bear", "Fish", "Eagle"]


def test_keep_aspect_resize():
    # Portrait 768x512 (HxW): scale 384/sqrt(768*512) = 0.6124 -> 470.3 x 313.5 -> floored to 448 x 256.
    assert keep_aspect_size(768, 512, 384) == (448, 256)
    assert keep_aspect_size(384, 384, 384) == (384, 384)
    assert keep_aspect_size(10, 1000, 384) == (64, 3840)


def test_keep_aspect_dataset(tmp_path):
    root = tmp_path / "aigi"
    write_aigi_sample(root, "p", _image(96, 64), [("thing", _box_mask(96, 64, 0, 48, 0, 64))])
    sample = AIGIDataset(root, image_size=128, resize="keep_aspect")[0]
    # 128/sqrt(96*64) = 1.633 -> 156.8 x 104.5 -> 128 x 64
    assert sample["image"].shape == (3, 128, 64) and sample["mask"].shape == (1, 128, 64)
    assert sample["mask"][0, :64].min() == 1 and sample["mask"][0, 64:].max() == 0


def test_converter_unions_regions_and_reads_alpha(tmp_path):
    src = tmp_path / "src"
    folder = src / "img_a"
    folder.mkdir(parents=True)
    Image.fromarray(_image(20, 30)).save(folder / "image.jpg")
    Image.fromarray((_box_mask(20, 30, 0, 5, 0, 5) * 255).astype(np.uint8)).save(folder / "Teddy_Bear.png")
    Image.fromarray((_box_mask(20, 30, 10, 15, 20, 30) * 255).astype(np.uint8)).save(
        folder / "Teddy_Bear__2.png"
    )
    # RGBA mask: dark red but opaque where foreground, transparent elsewhere -> alpha decides.
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., 0] = 90
    rgba[2:8, 3:9, 3] = 255
    Image.fromarray(rgba).save(folder / "Fish.png")
    other = src / "img_b"
    other.mkdir()
    Image.fromarray(_image(8, 8, 1)).save(other / "image.png")
    Image.fromarray((_box_mask(8, 8, 0, 4, 0, 8) * 255).astype(np.uint8)).save(other / "Cars.png")

    assert main(["convert", "--src", str(src), "--dst", str(tmp_path / "out")]) == 0
    dataset = AIGIDataset(tmp_path / "out", image_size=16)
    assert [(s["image_id"], s["prompt"]) for s in dataset.samples] == [
        ("img_a", "Fish"),
        ("img_a", "Teddy Bear"),
        ("img_b", "Cars"),
    ]
    fish = read_binary_mask(tmp_path / "out" / dataset.samples[0]["mask"])
    assert np.array_equal(fish, _box_mask(20, 30, 2, 8, 3, 9))
    bear = read_binary_mask(tmp_path / "out" / dataset.samples[1]["mask"])
    assert np.array_equal(bear, _box_mask(20, 30, 0, 5, 0, 5) | _box_mask(20, 30, 10, 15, 20, 30))
    assert main(["check", "--root", str(tmp_path / "out")]) == 0


def test_bad_inputs_raise_named_errors(tmp_path):
    root = tmp_path / "aigi"
    with pytest.raises(FileNotFoundError, match="annotations.json"):
        AIGIDataset(root)
    with pytest.raises(ValueError, match="same size|image is 10x10"):
        write_aigi_sample(root, "a", _image(10, 10), [("x", np.zeros((10, 12), np.uint8))])
    write_aigi_sample(root, "a", _image(10, 10), [("x", np.ones((10, 10), np.uint8))])
    # A mask of the wrong size on disk is caught when the sample is read.
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(root / "masks/a/00.png")
    with pytest.raises(ValueError, match=r"AIGI sample 0 .*image is 10x10 .* mask is 10x12"):
        AIGIDataset(root)[0]
    data = json.loads((root / "annotations.json").read_text())
    data["samples"][0]["prompt"] = " "
    (root / "annotations.json").write_text(json.dumps(data))
    with pytest.raises(
        ValueError, match=r"samples\[0\] \(image a, mask masks/a/00.png\) has an empty prompt"
    ):
        AIGIDataset(root)
    with pytest.raises(ValueError, match="single split"):
        AIGIDataset(root, split="train")
    with pytest.raises(ValueError, match="no per-image folders"):
        (tmp_path / "empty").mkdir()
        main(["convert", "--src", str(tmp_path / "empty"), "--dst", str(tmp_path / "o")])
