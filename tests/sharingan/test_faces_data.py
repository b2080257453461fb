"""Face datasets read the files their writers produce in the real formats; bad files raise naming them."""

from pathlib import Path

import numpy as np
import pytest
import torch

from sharingan.data import celeba, photoface
from sharingan.data.sfsnet_synthetic import (
    FaceRecord,
    read_face_csv,
    read_light,
    scan_synthetic,
    synthetic_dataset,
    write_face_csv,
    write_sfsnet_synthetic_fixture,
    write_synthetic_sample,
)
from sharingan.models.sfsnet import decode_normals, render

SPLITS = Path(__file__).resolve().parents[2] / "sharingan" / "data" / "splits" / "photoface"  # shipped


def test_synthetic_layout_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    face = rng.uniform(size=(16, 16, 3)).astype(np.float32)
    normal = rng.uniform(size=(16, 16, 3)).astype(np.float32)
    mask = (rng.uniform(size=(16, 16)) > 0.5).astype(np.float32)
    light = rng.normal(size=27)
    write_synthetic_sample(tmp_path, "0003", "000041", 1, 3, face, normal, face, mask, light)
    names = sorted(p.name for p in (tmp_path / "0003").iterdir())
    assert names == ["000041_albedo_1_3.png", "000041_face_1_3.png", "000041_light_1_3.txt",
                     "000041_mask_1_3.png", "000041_normal_1_3.png"]
    text = (tmp_path / "0003" / "000041_light_1_3.txt").read_text()
    assert text.endswith("\n") and len(text.strip().split("\t")) == 27
    records = scan_synthetic(tmp_path)
    assert [r.key for r in records] == ["0003_000041_1_3"]
    sample = synthetic_dataset(tmp_path, split="all", image_size=16)[0]
    assert torch.allclose(sample["image"], torch.from_numpy(face).permute(2, 0, 1), atol=1 / 255)
    assert torch.allclose(sample["normal"], torch.from_numpy(normal).permute(2, 0, 1), atol=1 / 255)
    assert torch.equal(sample["mask"][0], torch.from_numpy(mask))
    assert np.allclose(sample["lighting"].numpy(), light, atol=1e-6)


def test_procedural_samples_obey_the_image_model(tmp_path):
    write_sfsnet_synthetic_fixture(tmp_path, 3, image_size=32, seed=1)
    sample = synthetic_dataset(tmp_path, split="all", image_size=32)[0]
    batch = {k: v[None] for k, v in sample.items() if isinstance(v, torch.Tensor)}
    _, reconstruction = render(batch["normal"], batch["albedo"], batch["lighting"])
    inside = batch["mask"].bool().expand_as(reconstruction)
    error = (reconstruction.clamp(0, 1) - batch["image"])[inside].abs()
    assert error.mean() < 0.02  # 8-bit quantisation of normals, albedo and face
    assert decode_normals(batch["normal"])[:, 2][batch["mask"][:, 0].bool()].min() > 0  # faces the camera


def test_synthetic_errors_name_the_file(tmp_path):
    write_sfsnet_synthetic_fixture(tmp_path, 2, image_size=16)
    missing = next(tmp_path.rglob("*_albedo_*.png"))
    missing.unlink()
    with pytest.raises(FileNotFoundError, match=missing.name):
        scan_synthetic(tmp_path)
    assert len(scan_synthetic(tmp_path, strict=False)) == 1
    light = next(tmp_path.rglob("*_light_*.txt"))
    light.write_text("1\t2\t3\n")
    with pytest.raises(ValueError, match=light.name):
        read_light(light)
    light.write_text("1\tx" + "\t0" * 25 + "\n")
    with pytest.raises(ValueError, match="non-number"):
        read_light(light)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no SfSNet synthetic sample"):
        scan_synthetic(tmp_path / "empty")


def test_official_csv_format(tmp_path):
    write_sfsnet_synthetic_fixture(tmp_path / "syn", 3, image_size=16)
    records = scan_synthetic(tmp_path / "syn")
    csv_path = write_face_csv(tmp_path / "Syn_train.csv", records)
    first = csv_path.read_text().splitlines()[0].split(",")
    assert len(first) == 31 and first[0].endswith("_face_1_1.png") and first[1].endswith("_mask_1_1.png")
    assert first[2].endswith("_normal_1_1.png") and first[3].endswith("_albedo_1_1.png")
    back = read_face_csv(csv_path)
    assert [r.image for r in back] == [r.image for r in records]
    assert np.allclose(back[0].lighting, read_light(records[0].lighting), atol=1e-6)
    from_csv = synthetic_dataset(csv_path=csv_path, split="all", image_size=16)[1]
    from_dir = synthetic_dataset(tmp_path / "syn", split="all", image_size=16)[1]
    assert torch.allclose(from_csv["lighting"], from_dir["lighting"], atol=1e-6)
    # the official absolute prefix is mapped onto the given root
    official = tmp_path / "official.csv"
    official.write_text("/vulcan/scratch/koutilya/" + csv_path.read_text().splitlines()[0] + "\n")
    assert read_face_csv(official, root=tmp_path)[0].image == records[0].image
    bad = tmp_path / "bad.csv"
    bad.write_text("a.png,b.png,c.png\n")
    with pytest.raises(ValueError, match="bad.csv line 1: 3 columns"):
        read_face_csv(bad)
    assert isinstance(back[0], FaceRecord)


def test_celeba_layout_and_crop(tmp_path):
    root = celeba.write_celeba_fixture(tmp_path / "celeba", counts=(3, 1, 2))
    assert (root / "img_align_celeba" / "000001.jpg").is_file()
    assert celeba.read_partition(root)["000006.jpg"] == 2
    train, test = celeba.CelebAImages(root, "train", image_size=64), celeba.CelebAImages(root, "test", 64)
    assert len(train) == 3 and len(test) == 2 and test.names == ["000005.jpg", "000006.jpg"]
    item = train[0]
    assert item["image"].shape == (3, 64, 64) and 0 <= item["image"].min() and item["image"].max() <= 1
    # crop arithmetic by hand: a 218x178 ramp, central 178 square starts at row 20
    ramp = np.arange(218, dtype=np.float32)[:, None, None].repeat(178, 1).repeat(3, 2)
    assert celeba.crop_face(ramp, 178, image_size=178)[0, 0, 0] == 20.0
    with pytest.raises(ValueError, match="leaves"):
        celeba.crop_face(ramp, 200)
    (root / "img_align_celeba" / "000002.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="000002.jpg"):
        celeba.CelebAImages(root, "train")
    (root / "list_eval_partition.txt").write_text("000001.jpg 7\n")
    with pytest.raises(ValueError, match="list_eval_partition.txt line 1"):
        celeba.read_partition(root)


def test_photoface_fixture_lists_and_samples(tmp_path):
    root = photoface.write_photoface_fixture(tmp_path / "pf", subjects=("1001", "1002", "2001"), test_subjects=1,
                                             image_size=32)
    line = (root / "Photoface_test_list.txt").read_text().splitlines()[0].split()
    assert line[0].startswith("/scratch2/photoface-results/2001/") and line[0].endswith("_align.png")
    assert len(line) == 4 and set(line[1:]) <= {"0", "1"}
    test = photoface.PhotofaceDataset(root, split="test", image_size=32)
    assert len(test) == 4
    sample = test[0]
    assert torch.allclose(sample["normal"].norm(dim=0), torch.ones(32, 32), atol=1e-5)
    assert sample["mask"].unique().tolist() in ([0.0, 1.0], [1.0])
    train, val = photoface.split_entries(root, "train"), photoface.split_entries(root, "val")
    assert len(train) == int(8 * 0.85) and len(train) + len(val) == 8
    (root / "photoface-results" / "2001").rename(root / "gone")
    with pytest.raises(FileNotFoundError, match="2001"):
        photoface.PhotofaceDataset(root, split="test")
    bad = tmp_path / "Photoface_test_list.txt"
    bad.write_text("/scratch2/photoface-results/1/a/im0_align.png 1 2 0\n")
    with pytest.raises(ValueError, match="line 1: flags"):
        photoface.parse_photoface_list(bad)


def test_real_photoface_lists_parse_with_the_documented_counts():
    test = photoface.split_entries(SPLITS, "test")
    train, val = photoface.split_entries(SPLITS, "train"), photoface.split_entries(SPLITS, "val")
    assert len(test) == 2153 and len({e.subject for e in test}) == 100
    assert len(train) + len(val) == 10519 and len(val) == 1578
    assert not {e.subject for e in test} & {e.subject for e in train + val}
    histogram = {}
    for entry in test:
        histogram[entry.flags] = histogram.get(entry.flags, 0) + 1
    assert histogram == {(1, 1, 1): 1799, (1, 0, 0): 320, (0, 1, 0): 26, (0, 0, 0): 8}
    assert len(photoface.split_entries(SPLITS, "img")) == 12672
    assert test[0].relative == "photoface-results/1053/2008-04-05_14-15-50/im1_align.png"
