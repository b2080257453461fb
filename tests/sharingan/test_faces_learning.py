"""Slow: SfSNet pretraining on procedural synthetic faces really learns normals that transfer to the
photograph-like Photoface fixture (the untrained network is the reference)."""

from pathlib import Path

import pytest

from common.config import load_config
from sharingan.checkpoints import load_networks
from sharingan.data.photoface import write_photoface_fixture
from sharingan.data.sfsnet_synthetic import write_sfsnet_synthetic_fixture
from sharingan.tasks import load_task
from sharingan.train import run_stage

TINY = Path(__file__).resolve().parents[2] / "experiments" / "chapter2" / "faces_tiny.yaml"


@pytest.mark.slow
def test_synthetic_pretraining_lowers_photoface_error(tmp_path):
    write_sfsnet_synthetic_fixture(tmp_path / "synthetic", 64, image_size=64, seed=3)
    write_photoface_fixture(tmp_path / "photoface", subjects=("1001", "2001", "2002"), test_subjects=2,
                            image_size=64, seed=4)
    cfg = load_config(TINY, [f"data.synthetic_root={tmp_path / 'synthetic'}",
                             f"data.photoface_root={tmp_path / 'photoface'}", "data.batch_size=8",
                             "schedule.pretrain_task_iterations=150", "model.task_network.width=0.125",
                             "logging.image_every=50", "optim.pretrain_task.lr=1e-3"])
    task = load_task("normals")
    test_set = task.photoface_data(cfg, "test")
    before = task.evaluate_photoface(None, task.build_networks(cfg)["task_network"].eval(), test_set)
    checkpoint = run_stage(cfg, "pretrain_task", tmp_path / "runs")["checkpoint"]
    networks, _, _ = load_networks(checkpoint, task="normals")
    after = task.evaluate_photoface(None, networks["task_network"], test_set)
    print(f"Photoface fixture MAE before {before['mae_deg']:.1f} deg, after {after['mae_deg']:.1f} deg")
    assert after["mae_deg"] < before["mae_deg"] - 10.0, (before, after)
    assert after["lt30"] > before["lt30"]
