"""RefCOCO / RefCOCO+ / G-Ref loader on tiny fixtures in the refer format (refs pickle + instances.json)."""

import json
import os
import pickle

import numpy as np
import pytest

from ldznet.data.coco_masks import encode_rle
from ldznet.data.refcoco import (
    IMAGES_SUBDIR,
    RefCOCODataset,
    coco_file_name,
    make_ref,
    refs_path,
    select_split,
    write_instances_json,
    write_refer_dataset,
    write_refs_pickle,
)
from ldznet.data.safe_pickle import safe_load


def _image(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def _rle_mask():
    mask = np.zeros((20, 30), np.uint8)
    mask[4:9, 10:25] = 1
    mask[15:18, 2:4] = 1
    return mask


def _write(root, dataset="refcoco"):
    crowd = np.zeros((20, 30), np.uint8)
    crowd[0:2, 0:30] = 1
    samples = [
        {
            "image_id": 388997,
            "image": _image(20, 30),
            "objects": [
                # two polygon parts (flat x,y lists): squares (2,2)-(6,6) and (4,4)-(8,10), overlapping
                {
                    "ann_id": 1001,
                    "split": "val",
                    "sentences": ["The man on the LEFT.", "Café guy"],
                    "segmentation": [[2, 2, 6, 2, 6, 6, 2, 6], [4, 4, 8, 4, 8, 10, 4, 10]],
                },
                {"ann_id": 1002, "split": "testA", "sentences": ["woman in red"], "mask": _rle_mask()},
            ],
        },
        {
            "image_id": 42,
            "image": _image(12, 16, 1),
            "objects": [
                {
                    "ann_id": 1003,
                    "split": "testB",
                    "sentences": ["crowd row"],
                    "iscrowd": 1,
                    "segmentation": encode_rle(crowd[:12, :16], compressed=False),
                },
                {
                    "ann_id": 1004,
                    "split": "train",
                    "sentences": ["a dog"],
                    "segmentation": [[0, 0, 4, 0, 4, 4]],
                },
            ],
        },
    ]
    return write_refer_dataset(root, dataset, samples)


def test_writer_files_match_the_refer_layout(tmp_path):
    root = _write(tmp_path / "refer")
    assert (root / "refcoco" / "refs(unc).p").is_file() and (root / "refcoco" / "instances.json").is_file()
    assert (root / IMAGES_SUBDIR / "COCO_train2014_000000388997.jpg").is_file()
    raw = (root / "refcoco" / "refs(unc).p").read_bytes()
    assert raw[:2] == b"\x80\x02"  # protocol 2, like refer's cPickle files
    refs = pickle.loads(raw)  # plain data: the standard unpickler agrees with ours
    assert refs == safe_load(root / "refcoco" / "refs(unc).p")
    ref = refs[0]
    assert set(ref) == {
        "ref_id",
        "ann_id",
        "image_id",
        "category_id",
        "split",
        "sent_ids",
        "sentences",
        "file_name",
    }
    assert ref["sentences"][0] == {
        "tokens": ["the", "man", "on", "the", "left"],
        "raw": "The man on the LEFT.",
        "sent_id": 10,
        "sent": "the man on the left",
    }
    assert ref["file_name"] == "COCO_train2014_000000388997_1001.jpg"
    instances = json.loads((root / "refcoco" / "instances.json").read_text())
    assert {im["id"] for im in instances["images"]} == {388997, 42}
    ann = {a["id"]: a for a in instances["annotations"]}
    assert isinstance(ann[1002]["segmentation"]["counts"], str)  # compressed RLE
    assert isinstance(ann[1003]["segmentation"]["counts"], list) and ann[1003]["iscrowd"] == 1
    assert ann[1002]["bbox"] == [2.0, 4.0, 23.0, 14.0] and ann[1002]["area"] == _rle_mask().sum()


def test_split_selection_follows_refer():
    refs = [{"split": s} for s in ("train", "val", "testA", "testB", "test")]
    assert [r["split"] for r in select_split(refs, "testA")] == ["testA"]
    assert [r["split"] for r in select_split(refs, "test")] == ["testA", "testB", "test"]
    assert [r["split"] for r in select_split(refs, "val")] == ["val"]
    with pytest.raises(ValueError, match="unknown refer split 'dev'"):
        select_split(refs, "dev")


def test_samples_masks_and_prompts(tmp_path):
    root = _write(tmp_path / "refer")
    val = RefCOCODataset(root, split="val", image_size=40)
    assert len(val) == 2  # one sample per sentence
    assert [s["text"] for s in val.samples] == ["the man on the left", "café guy"]
    # Union of two half-open squares: 4x4 + 4x6 - 2x2 overlap = 16 + 24 - 4 = 36 px.
    mask = val.load_mask(0)
    expected = np.zeros((20, 30), np.uint8)
    expected[2:6, 2:6] = 1
    expected[4:10, 4:8] = 1
    assert np.array_equal(mask, expected) and mask.sum() == 36
    sample = val[1]
    assert sample["prompt"] == "café guy" and sample["image_id"] == "388997" and sample["sample_index"] == 1
    assert sample["image"].shape == (3, 40, 40) and sample["mask"].shape == (1, 40, 40)
    raw = RefCOCODataset(root, split="val", image_size=8, text_key="raw", prompt_mode="template")
    assert raw[0]["prompt"] == "a photo of a The man on the LEFT.."
    test_a = RefCOCODataset(root, split="testA", image_size=8)
    assert np.array_equal(test_a.load_mask(0), _rle_mask())
    test_b = RefCOCODataset(root, split="testB", image_size=8)
    assert test_b.load_mask(0)[:2].all() and test_b.load_mask(0)[2:].sum() == 0
    assert len(RefCOCODataset(root, split="test", image_size=8)) == 2


def test_partitions_per_dataset(tmp_path):
    root = _write(tmp_path / "refer", dataset="refcocog")
    assert refs_path(root, "refcocog", "umd").is_file()
    assert len(RefCOCODataset(root, dataset="refcocog", split="val", image_size=8)) == 2
    _write(root, dataset="refcoco+")
    assert (root / "refcoco+" / "refs(unc).p").is_file()
    assert len(RefCOCODataset(root, dataset="refcoco+", split="train", image_size=8)) == 1
    with pytest.raises(ValueError, match="partitions"):
        RefCOCODataset(root, dataset="refcoco+", split_by="umd")


def test_malicious_refs_pickle_is_refused(tmp_path):
    root = _write(tmp_path / "refer")
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch '{marker}'",)

    refs_path(root, "refcoco", "unc").write_bytes(pickle.dumps([Evil()], protocol=2))
    with pytest.raises(pickle.UnpicklingError, match=r"refs\(unc\)\.p.*refusing"):
        RefCOCODataset(root, split="val")
    assert not marker.exists()


def test_missing_and_inconsistent_files(tmp_path):
    root = _write(tmp_path / "refer")
    with pytest.raises(FileNotFoundError, match=r"refcoco\+/refs\(unc\)\.p"):
        RefCOCODataset(root, dataset="refcoco+")
    # A ref pointing to an annotation that instances.json lacks.
    refs = safe_load(refs_path(root, "refcoco", "unc"))
    write_refs_pickle(refs_path(root, "refcoco", "unc"), refs + [make_ref(99, 5555, 42, "val", ["ghost"])])
    with pytest.raises(ValueError, match="ref 99 points to annotation 5555"):
        RefCOCODataset(root, split="val")
    write_refs_pickle(refs_path(root, "refcoco", "unc"), refs + [make_ref(98, 1004, 42, "val", [" "])])
    with pytest.raises(ValueError, match=r"ref 98 sentence 0 \(sent_id 980\) is empty"):
        RefCOCODataset(root, split="val")
    write_refs_pickle(refs_path(root, "refcoco", "unc"), refs)
    # instances.json says 20x30 but the image on disk is 20x31.
    instances = json.loads((root / "refcoco" / "instances.json").read_text())
    instances["images"][0]["width"] = 31
    write_instances_json(root / "refcoco" / "instances.json", instances["images"], instances["annotations"])
    dataset = RefCOCODataset(root, split="testA", image_size=8)
    with pytest.raises(ValueError, match=coco_file_name(388997) + r": image is 20x30 .* says 20x31"):
        dataset[0]
    del instances["annotations"][1]["segmentation"]
    write_instances_json(root / "refcoco" / "instances.json", instances["images"], instances["annotations"])
    with pytest.raises(ValueError, match=r"instances.json: annotations\[1\] lacks keys \['segmentation'\]"):
        RefCOCODataset(root, split="val")
    (root / "refcoco" / "instances.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"refcoco/instances.json"):
        RefCOCODataset(root, split="val")
