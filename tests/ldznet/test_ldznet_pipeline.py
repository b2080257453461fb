"""End to end (issue items 8, 9): the Chapter 3 pipeline on a tiny SD and a toy PhraseCut, and predict."""

import json

import numpy as np
import pytest
from PIL import Image

from common.config import load_config
from common.testing import write_tiny_stable_diffusion
from ldznet.data.transforms import write_image
from ldznet.pipeline import run_pipeline
from ldznet.predict import main as predict_main
from tests.helpers.toy_phrasecut import write_toy_phrasecut


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    return {"sd": write_tiny_stable_diffusion(root / "tiny_sd", seed=5),
            "phrasecut": write_toy_phrasecut(root / "VGPhraseCut_v0", samples_per_split=4, size=64)}


def _overrides(world, tmp_path):
    return [f"model.stable_diffusion.path={world['sd']}", f"data.train.root={world['phrasecut']}",
            f"data.val.root={world['phrasecut']}", f"pipeline.evaluation.datasets.phrasecut.root={world['phrasecut']}",
            f"pipeline.out={tmp_path / 'pipeline'}", f"pipeline.runs_root={tmp_path / 'runs'}",
            "trainer.max_steps=1", "+trainer.num_sanity_val_steps=0", "data.val_limit=2", "log_images_every=0"]


@pytest.fixture(scope="module")
def pipeline_run(world, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("pipeline")
    cfg = load_config("experiments/chapter3/pipeline_tiny.yaml", _overrides(world, tmp_path))
    return run_pipeline(cfg), tmp_path


def test_pipeline_trains_every_variant_and_writes_tables(pipeline_run):
    summary, tmp_path = pipeline_run
    assert set(summary["runs"]) == {"rgbnet", "znet", "ldznet", "ldznet_concat"}
    assert summary["verify"]["datasets"] == {"train": 4, "val": 4, "evaluate phrasecut": 4}
    metrics = summary["results"]["phrasecut"]["metrics"]
    assert set(metrics) == {"RGBNet", "ZNet", "LD-ZNet", "LD-ZNet with concatenation"}
    assert all(entry["sample_count"] == 4 for entry in metrics.values())
    table = json.loads((tmp_path / "pipeline" / "tables" / "phrasecut" / "table_3_1.json").read_text())
    ours = {row["method"] for row in table["ours"]}
    assert {"RGBNet", "ZNet", "LD-ZNet"} <= ours and any(row["method"] == "LD-ZNet" for row in table["paper"])
    assert (tmp_path / "pipeline" / "tables" / "phrasecut" / "table_3_4.md").is_file()
    on_disk = json.loads((tmp_path / "pipeline" / "metrics.json").read_text())
    assert on_disk["results"]["phrasecut"]["metrics"]["ZNet"]["miou_best"] == pytest.approx(
        metrics["ZNet"]["miou_best"])


def test_pipeline_reports_every_missing_input_before_training(world, tmp_path):
    overrides = _overrides(world, tmp_path)
    overrides[0] = f"model.stable_diffusion.path={tmp_path / 'no_sd'}"
    overrides[3] = f"pipeline.evaluation.datasets.phrasecut.root={tmp_path / 'no_data'}"
    cfg = load_config("experiments/chapter3/pipeline_tiny.yaml", overrides)
    with pytest.raises(RuntimeError) as error:
        run_pipeline(cfg)
    assert "no_sd" in str(error.value) and "no_data" in str(error.value)
    assert not (tmp_path / "runs").exists()


def test_predict_handles_non_square_images(pipeline_run, tmp_path):
    summary, _ = pipeline_run
    image = np.random.default_rng(1).integers(0, 255, size=(50, 130, 3), dtype=np.uint8)
    write_image(tmp_path / "wide.png", image)
    predict_main(["--checkpoint", summary["runs"]["ldznet"]["segmenter"], "--image", str(tmp_path / "wide.png"),
                  "--prompt", "red square", "--out", str(tmp_path / "out"), "--device", "cpu"])
    mask = np.asarray(Image.open(tmp_path / "out" / "wide__red_square_mask.png"))
    overlay = np.asarray(Image.open(tmp_path / "out" / "wide__red_square_overlay.png"))
    assert mask.shape == (50, 130) and set(np.unique(mask)) <= {0, 255}
    assert overlay.shape == (50, 130, 3)
