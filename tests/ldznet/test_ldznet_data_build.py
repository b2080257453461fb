"""build_dataset from the experiments/chapter3/data/*.yaml nodes, roots given by environment variables."""

import numpy as np
import pytest
from torch.utils.data import DataLoader

from common.config import EXPERIMENTS_ROOT, load_config
from ldznet.data import build_dataset
from ldznet.data.aigi import AIGIDataset, write_aigi_sample
from ldznet.data.phrasecut import PhraseCutDataset, write_phrasecut_split
from ldznet.data.refcoco import RefCOCODataset, write_refer_dataset

DATA_DIR = EXPERIMENTS_ROOT / "chapter3" / "data"


def _image(height, width):
    return np.random.default_rng(0).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def _worlds(tmp_path, monkeypatch):
    pc = tmp_path / "pc"
    rect = [[[[1, 1], [6, 1], [6, 6], [1, 6]]]]
    for split in ("train", "val", "test"):
        write_phrasecut_split(
            pc,
            split,
            [
                {
                    "image_id": {"train": 1, "val": 2, "test": 3}[split],
                    "image": _image(12, 20),
                    "phrases": [{"phrase": "box", "instances": rect}],
                }
            ],
        )
    aigi = tmp_path / "aigi"
    mask = np.zeros((12, 20), np.uint8)
    mask[2:5, 3:9] = 1
    write_aigi_sample(aigi, "a", _image(12, 20), [("Box", mask)])
    refer = tmp_path / "refer"
    for name in ("refcoco", "refcoco+", "refcocog"):
        write_refer_dataset(
            refer,
            name,
            [
                {
                    "image_id": 7,
                    "image": _image(12, 20),
                    "objects": [{"ann_id": 1, "split": "val", "sentences": ["the box"], "mask": mask}],
                }
            ],
        )
    monkeypatch.setenv("LDZNET_PHRASECUT_ROOT", str(pc))
    monkeypatch.setenv("LDZNET_AIGI_ROOT", str(aigi))
    monkeypatch.setenv("LDZNET_REFER_ROOT", str(refer))


@pytest.mark.parametrize(
    "file,role,cls",
    [
        ("phrasecut_train", "train", PhraseCutDataset),
        ("phrasecut_val", "val", PhraseCutDataset),
        ("phrasecut_test", "test", PhraseCutDataset),
        ("aigi", "test", AIGIDataset),
        ("refcoco", "test", RefCOCODataset),
        ("refcoco_plus", "test", RefCOCODataset),
        ("refcocog", "test", RefCOCODataset),
    ],
)
def test_every_data_config_builds(tmp_path, monkeypatch, file, role, cls):
    _worlds(tmp_path, monkeypatch)
    cfg = load_config(DATA_DIR / f"{file}.yaml")
    dataset = build_dataset(cfg.data[role], image_size=16)
    assert isinstance(dataset, cls) and len(dataset) == 1
    batch = next(iter(DataLoader(dataset, batch_size=1)))
    assert batch["image"].shape == (1, 3, 16, 16) and batch["mask"].shape == (1, 1, 16, 16)
    assert isinstance(batch["prompt"], list) and isinstance(batch["prompt"][0], str)
    assert batch["image_id"] == [str(dataset.samples[0]["image_id"])]


def test_train_node_crops_and_randomises_prompts_eval_node_does_not():
    train = load_config(DATA_DIR / "phrasecut_train.yaml").data.train
    test = load_config(DATA_DIR / "phrasecut_test.yaml").data.test
    assert train.crop and train.prompt_mode == "random" and train.image_size == 384
    assert not test.crop and test.prompt_mode == "raw" and test.split == "test"
    assert load_config(DATA_DIR / "refcocog.yaml").data.test.split_by == "umd"
    assert load_config(DATA_DIR / "refcoco_plus.yaml").data.test.name == "refcoco+"


def test_bad_nodes_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match=r"unknown keys \['crop_size'\]; valid: .*'crop'"):
        build_dataset({"name": "phrasecut", "root": str(tmp_path), "crop_size": 3})
    with pytest.raises(ValueError, match="unknown dataset name 'coco'"):
        build_dataset({"name": "coco", "root": str(tmp_path)})
    with pytest.raises(ValueError, match="needs 'name' and 'root'"):
        build_dataset({"split": "test"})
