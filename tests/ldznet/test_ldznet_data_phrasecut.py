"""PhraseCut loader on tiny fixtures written in the real VGPhraseCut_v0 format."""

import json

import numpy as np
import pytest
import torch

from ldznet.data.phrasecut import (
    DEFAULT_EVAL_TEMPLATE,
    INVALID_IMAGE_IDS,
    PROMPT_TEMPLATES,
    PhraseCutDataset,
    write_image_data_split,
    write_phrasecut_split,
)
from ldznet.data.transforms import random_square_crop, xy_polygons_to_mask


def _rect(x0, y0, x1, y1):
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


def _image(height, width, seed):
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def _write_world(root):
    write_phrasecut_split(
        root,
        "test",
        [
            {
                "image_id": 11,
                "image": _image(24, 32, 0),
                "phrases": [
                    {
                        "phrase": "white car",
                        "instances": [[_rect(2, 3, 9, 7)]],
                        "name": "car",
                        "attributes": ["white"],
                    },
                    # two instances, the second with two polygons; union of all three
                    {
                        "phrase": "trees",
                        "instances": [[_rect(0, 0, 3, 3)], [_rect(20, 10, 25, 12), _rect(24, 11, 30, 20)]],
                    },
                ],
            },
            {
                "image_id": 12,
                "image": _image(40, 30, 1),
                "phrases": [
                    {"phrase": "  sky ", "instances": [[_rect(0, 0, 29, 9)]]},
                ],
            },
            {
                "image_id": sorted(INVALID_IMAGE_IDS)[0],
                "image": _image(10, 10, 2),
                "phrases": [
                    {"phrase": "bad image", "instances": [[_rect(0, 0, 5, 5)]]},
                ],
            },
        ],
    )
    write_phrasecut_split(
        root,
        "val",
        [
            {
                "image_id": 21,
                "image": _image(16, 16, 3),
                "phrases": [{"phrase": "dog", "instances": [[_rect(1, 1, 4, 4)]]}],
            },
        ],
    )
    write_phrasecut_split(
        root,
        "miniv",
        [
            {
                "image_id": 31,
                "image": _image(16, 20, 4),
                "phrases": [{"phrase": "cat", "instances": [[_rect(5, 5, 8, 9)]]}],
            },
        ],
    )
    return root


def test_writer_produces_the_real_format(tmp_path):
    root = _write_world(tmp_path / "VGPhraseCut_v0")
    tasks = json.loads((root / "refer_test.json").read_text())
    assert isinstance(tasks, list) and len(tasks) == 4
    first = tasks[0]
    assert first["task_id"].startswith("11__") and first["image_id"] == 11
    assert first["Polygons"] == [[[[2.0, 3.0], [9.0, 3.0], [9.0, 7.0], [2.0, 7.0]]]]
    assert first["instance_boxes"] == [[2.0, 3.0, 7.0, 4.0]]
    assert first["phrase_structure"]["name"] == "car" and first["phrase_structure"]["attributes"] == ["white"]
    info = {e["image_id"]: e for e in json.loads((root / "image_data_split.json").read_text())}
    assert info[11]["split"] == "test" and (info[11]["width"], info[11]["height"]) == (32, 24)
    assert info[21]["split"] == "val" and info[31]["split"] == "miniv"  # merged across writes
    assert (root / "images" / "11.jpg").is_file() and (root / "refer_input_test.json").is_file()
    assert "Polygons" not in json.loads((root / "refer_input_test.json").read_text())[0]
    assert (root / "name_att_rel_count.json").is_file()


def test_polygon_rasteriser_is_closed_on_float_coordinates():
    # Integer rectangle (1,1)-(6,4) in an 8x6 image: pixel centres on the boundary count -> 6 x 4 = 24 px.
    mask = xy_polygons_to_mask([_rect(1, 1, 6, 4)], 6, 8)
    expected = np.zeros((6, 8), np.uint8)
    expected[1:5, 1:7] = 1
    assert np.array_equal(mask, expected)
    # Float coordinates are kept (no int() truncation): centres with 1.9 <= x <= 6.7, 1.2 <= y <= 4.99 are
    # columns 2..6 and rows 2..4 (PIL after int() would have drawn columns 1..6, rows 1..4).
    expected = np.zeros((6, 8), np.uint8)
    expected[2:5, 2:7] = 1
    assert np.array_equal(xy_polygons_to_mask([_rect(1.9, 1.2, 6.7, 4.99)], 6, 8), expected)


def _pil_after_int_truncation(polygons, height, width):
    """The former rasteriser (PhraseCut toolkit style): PIL, closed outline, coordinates truncated by int()."""
    from PIL import Image, ImageDraw

    canvas = Image.new("L", (width, height), 0)
    for polygon in polygons:
        ImageDraw.Draw(canvas).polygon([(int(x), int(y)) for x, y in polygon], fill=1, outline=1)
    return np.asarray(canvas, dtype=np.uint8)


def test_polygons_are_drawn_as_the_protocol_does_with_skimage_polygon2mask():
    """Issue 12 item 5: CLIPSeg / LD-ZNet draw each polygon with polygon2mask((H, W), poly[:, ::-1]) on float
    coordinates and union them; small polygons differ visibly from PIL after int() truncation."""
    from skimage.draw import polygon2mask

    rng = np.random.default_rng(5)
    ious = []
    for _ in range(20):
        polygons = []
        for _ in range(int(rng.integers(1, 3))):  # one or two polygons per phrase
            n = int(rng.integers(3, 8))
            angles = np.sort(rng.uniform(0, 2 * np.pi, n))
            radii = rng.uniform(5, 15, n)
            centre = rng.uniform(12, 28, 2)
            polygons.append(np.stack([centre[0] + radii * np.cos(angles), centre[1] + radii * np.sin(angles)], 1))
        mask = xy_polygons_to_mask([p.tolist() for p in polygons], 40, 44)
        reference = np.zeros((40, 44), bool)
        for polygon in polygons:
            reference |= polygon2mask((40, 44), polygon[:, ::-1])
        assert mask.dtype == np.uint8 and np.array_equal(mask, reference.astype(np.uint8))
        old = _pil_after_int_truncation(polygons, 40, 44).astype(bool)
        ious.append((old & reference).sum() / (old | reference).sum())
    assert max(ious) < 1.0 and np.mean(ious) < 0.95  # the two rasterisers really differ at this size
    # one small polygon: a triangle of radius ~5 px
    triangle = [[10.7, 3.6], [15.9, 11.8], [5.4, 11.2]]
    assert not np.array_equal(xy_polygons_to_mask([triangle], 16, 20), _pil_after_int_truncation([triangle], 16, 20))


def test_eval_samples_full_image_raw_phrase(tmp_path):
    root = _write_world(tmp_path / "pc")
    dataset = PhraseCutDataset(root, split="test", image_size=48)
    assert len(dataset) == 3  # the invalid VG id is skipped
    # Hand counts (closed PIL polygons): 8x5 = 40; trees = 16 + (6x3 + 7x10 - overlap 2x2) = 16 + 84 = 100.
    assert dataset.load_mask(0).sum() == 40
    assert dataset.load_mask(1).sum() == 100
    sample = dataset[0]
    assert set(sample) == {"image", "mask", "prompt", "sample_index", "image_id"}
    assert sample["image"].shape == (3, 48, 48) and sample["image"].dtype == torch.float32
    assert -1.0 <= sample["image"].min() and sample["image"].max() <= 1.0
    assert sample["mask"].shape == (1, 48, 48) and set(sample["mask"].unique().tolist()) <= {0.0, 1.0}
    assert sample["prompt"] == "white car" and sample["image_id"] == "11" and sample["sample_index"] == 0
    assert dataset[2]["prompt"] == "sky"  # whitespace stripped
    # Squash (no crop): mask fraction is kept up to nearest-neighbour rounding.
    assert abs(sample["mask"].mean().item() - 40 / (24 * 32)) < 0.02
    with_invalid = PhraseCutDataset(root, split="test", image_size=48, skip_invalid_images=False)
    assert len(with_invalid) == 4


def test_prompt_modes(tmp_path):
    root = _write_world(tmp_path / "pc")
    fixed = PhraseCutDataset(root, split="test", image_size=16, prompt_mode="template")
    assert fixed[0]["prompt"] == DEFAULT_EVAL_TEMPLATE.format("white car") == "a photo of a white car."
    torch.manual_seed(0)
    random_mode = PhraseCutDataset(root, split="test", image_size=16, prompt_mode="random")
    prompts = {random_mode[0]["prompt"] for _ in range(60)}
    assert prompts <= {t.format("white car") for t in PROMPT_TEMPLATES} and len(prompts) >= 5
    assert len(PROMPT_TEMPLATES) == 9
    with pytest.raises(ValueError, match="prompt_mode"):
        PhraseCutDataset(root, split="test", prompt_mode="shuffle")


def test_training_crop_is_square_and_keeps_the_object(tmp_path):
    root = _write_world(tmp_path / "pc")
    dataset = PhraseCutDataset(root, split="test", image_size=20, crop=True, prompt_mode="random")
    torch.manual_seed(1)
    for _ in range(10):
        sample = dataset[0]
        assert sample["image"].shape == (3, 20, 20)
        assert sample["mask"].sum() > 0


def test_random_square_crop_rule():
    # Wide 10x30 mask with the object in columns 25..29: a 10x10 window passes the 5 % rule (> 15 px)
    # only when it holds at least two object columns, i.e. offset >= 17.
    mask = np.zeros((10, 30), np.uint8)
    mask[:, 25:] = 1
    torch.manual_seed(0)
    for _ in range(20):
        rows, cols = random_square_crop(mask)
        assert rows == slice(0, 10) and cols.stop - cols.start == 10
        assert mask[rows, cols].sum() > 15
    # Tall image: the crop moves along the rows.
    rows, cols = random_square_crop(mask.T.copy())
    assert cols == slice(0, 10) and rows.stop - rows.start == 10


def test_split_combination_and_unknown_split(tmp_path):
    root = _write_world(tmp_path / "pc")
    assert len(PhraseCutDataset(root, split="val_miniv", image_size=16)) == 2
    with pytest.raises(ValueError, match="unknown PhraseCut split 'testing'"):
        PhraseCutDataset(root, split="testing")


def test_missing_and_malformed_files_are_named(tmp_path):
    root = _write_world(tmp_path / "pc")
    with pytest.raises(FileNotFoundError, match="refer_train.json"):
        PhraseCutDataset(root, split="train")
    (root / "refer_val.json").write_text("{not json")
    with pytest.raises(ValueError, match="refer_val.json"):
        PhraseCutDataset(root, split="val")
    (root / "image_data_split.json").unlink()
    with pytest.raises(FileNotFoundError, match="image_data_split.json"):
        PhraseCutDataset(root, split="test")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        PhraseCutDataset(tmp_path / "nowhere")


def test_empty_phrase_names_the_task(tmp_path):
    root = tmp_path / "pc"
    write_phrasecut_split(
        root,
        "test",
        [
            {
                "image_id": 5,
                "image": _image(8, 8, 0),
                "phrases": [{"phrase": "   ", "instances": [[_rect(0, 0, 2, 2)]]}],
            },
        ],
    )
    with pytest.raises(ValueError, match=r"refer_test.json: task 5__500 .*empty phrase"):
        PhraseCutDataset(root, split="test")


def test_image_size_mismatch_raises(tmp_path):
    root = _write_world(tmp_path / "pc")
    write_image_data_split(root, [{"image_id": 12, "width": 31, "height": 40, "split": "test"}])
    dataset = PhraseCutDataset(root, split="test", image_size=16)
    dataset[0]
    with pytest.raises(ValueError, match=r"12.jpg: image is 40x30 .* says 40x31"):
        dataset[2]


def test_missing_keys_are_named(tmp_path):
    root = _write_world(tmp_path / "pc")
    tasks = json.loads((root / "refer_val.json").read_text())
    del tasks[0]["Polygons"]
    (root / "refer_val.json").write_text(json.dumps(tasks))
    with pytest.raises(ValueError, match=r"refer_val.json: task 0 \(21__2100\) lacks keys \['Polygons'\]"):
        PhraseCutDataset(root, split="val")
    entries = json.loads((root / "image_data_split.json").read_text())
    del entries[0]["height"]
    (root / "image_data_split.json").write_text(json.dumps(entries))
    with pytest.raises(ValueError, match=r"image_data_split.json: entry 0 lacks keys \['height'\]"):
        PhraseCutDataset(root, split="test")
