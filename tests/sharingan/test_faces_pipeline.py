"""Smoke test of `make chapter2-normals` (= python -m sharingan.pipeline --task normals) on tiny fixtures,
and of the generic eval / predict / summary commands on the face checkpoint it produces."""

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from torch import nn

from sharingan import eval as eval_command
from sharingan import pipeline, predict, summary
from sharingan.checkpoints import load_networks, read_networks_checkpoint, save_networks
from sharingan.data.celeba import write_celeba_fixture
from sharingan.data.multipie import write_multipie_fixture
from sharingan.data.photoface import write_photoface_fixture
from sharingan.data.sfsnet_synthetic import read_face_csv, write_sfsnet_synthetic_fixture

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "experiments" / "chapter2" / "faces_tiny.yaml"


def test_pipeline_end_to_end_on_fixtures(tmp_path):
    write_sfsnet_synthetic_fixture(tmp_path / "synthetic", 12, image_size=64)
    write_celeba_fixture(tmp_path / "celeba", counts=(12, 2, 2))
    write_photoface_fixture(tmp_path / "photoface", subjects=("1001", "1002", "2001"), test_subjects=1,
                            image_size=64)
    write_multipie_fixture(tmp_path / "multipie", subjects=(1, 2), shots=(0, 9, 18))
    overrides = [f"data.synthetic_root={tmp_path / 'synthetic'}", f"data.celeba_root={tmp_path / 'celeba'}",
                 f"data.photoface_root={tmp_path / 'photoface'}", f"data.multipie_root={tmp_path / 'multipie'}",
                 "eval.multipie.shots=[0,9,18]"]
    # exactly what `make chapter2-normals ARGS="--config .../faces_tiny.yaml ..."` runs
    result = pipeline.main(["--task", "normals", "--config", str(TINY), "--root", str(tmp_path / "runs"), *overrides])

    assert set(result["rows"]) == {"SfSNet (no SharinGAN)", "SharinGAN (proposed)"}
    assert result["data"]["synthetic_train"] == 11 and result["data"]["multipie"] == 6
    # pseudo-labels made by the stage-2 SfSNet, beside its checkpoint, in the format the real loader reads
    pretrained = Path(result["pretrained"]["task_network"])
    labels = pretrained.parent.parent / "pseudo_labels"
    assert len(read_face_csv(labels / "celeba_train.csv")) == 12
    assert json.loads((labels / "pseudo_labels.json").read_text())["checkpoint"] == str(pretrained)

    sharingan_row = result["rows"]["SharinGAN (proposed)"]
    checkpoint = Path(sharingan_row["checkpoint"])
    payload = read_networks_checkpoint(checkpoint, task="normals")
    assert payload["stage"] == "train" and set(payload["networks"]) == {"generator", "critic", "task_network"}
    with pytest.raises(ValueError, match="not 'depth'"):
        load_networks(checkpoint, task="depth")
    metrics = json.loads(Path(sharingan_row["metrics"]).read_text())
    photoface = metrics["photoface"]["metrics"]
    assert set(photoface) >= {"mae_deg", "lt20", "lt25", "lt30"}
    assert 0.0 <= photoface["lt20"] <= photoface["lt25"] <= photoface["lt30"]
    assert metrics["multipie"]["protocol"]["classes"] == 3

    tables = [Path(p) for p in result["tables"]]
    assert {p.name for p in tables} == {"table_2_3_photoface.md", "table_2_4_multipie.md"}
    table_2_3 = tables[0].read_text() if tables[0].name.startswith("table_2_3") else tables[1].read_text()
    assert "24.00" in table_2_3 and "SfSNet (no SharinGAN)" in table_2_3 and "SharinGAN (proposed)" in table_2_3
    no_sharingan = read_networks_checkpoint(result["rows"]["SfSNet (no SharinGAN)"]["checkpoint"])
    assert "generator" not in no_sharingan["networks"]

    evaluated = eval_command.main(["--checkpoint", str(checkpoint), "--out", str(tmp_path / "eval"), "--task",
                                   "normals", "data.multipie_root=null"])
    assert evaluated["photoface"]["metrics"]["mae_deg"] == pytest.approx(photoface["mae_deg"], abs=1e-6)
    assert (tmp_path / "eval" / "table_2_3_photoface.md").is_file()
    # a checkpoint of the other task is refused by name
    depth_like = OmegaConf.create(OmegaConf.to_yaml(load_networks(checkpoint)[1]))
    depth_like.task = "depth"
    foreign = save_networks(tmp_path / "depth.pt", depth_like, {"task_network": nn.Linear(1, 1)}, "train")
    with pytest.raises(ValueError, match="is for task 'depth', not 'normals'"):
        eval_command.main(["--checkpoint", str(foreign), "--task", "normals", "--out", str(tmp_path / "x")])
    with pytest.raises(ValueError, match="is for task 'depth', not 'normals'"):
        predict.main(["--checkpoint", str(foreign), "--task", "normals", "--input", str(tmp_path), "--out",
                      str(tmp_path / "y")])

    written = predict.main(["--checkpoint", str(checkpoint), "--input", str(tmp_path / "celeba" / "img_align_celeba"
                                                                             / "000001.jpg"),
                            "--out", str(tmp_path / "predicted"), "--task", "normals"])
    assert {p.name for p in written} >= {"000001_normals.png", "000001_albedo.png", "000001_shading.png"}
    counts = summary.main(["--task", "normals"])
    assert counts == {"generator": 3_406_473, "critic": 12_055_329, "task_network": 3_423_393}
