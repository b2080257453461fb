"""Depth evaluation, checkpoints and prediction, checked with networks whose output is known."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from common.config import REPO_ROOT, load_config
from sharingan.checkpoints import load_networks, save_networks
from sharingan.data.kitti import write_kitti_fixture, write_kitti_list, write_velodyne_bin
from sharingan.data.make3d import write_make3d_fixture, write_make3d_mat
from sharingan.eval import main as eval_main
from sharingan.predict import main as predict_main
from sharingan.tasks import load_task
from sharingan.tasks.depth import build_networks, evaluate, predict_depth

TINY = REPO_ROOT / "experiments" / "chapter2" / "depth_tiny.yaml"


class ConstantDepth(nn.Module):
    """A task network that predicts `metres` everywhere, at the four output scales."""

    def __init__(self, metres: float) -> None:
        super().__init__()
        self.value = metres / 80.0 * 2.0 - 1.0

    def forward(self, x):
        b, _, h, w = x.shape
        return [torch.full((b, 1, h // 2**k, w // 2**k), self.value) for k in (3, 2, 1, 0)]


@pytest.fixture()
def flat_world(tmp_path):
    """KITTI frames whose velodyne points all lie 20 m ahead (plus some at 60 m), Make3D at 30 m."""
    entries = write_kitti_fixture(tmp_path / "kitti", frames=2, image_size=(48, 160))
    rng = np.random.default_rng(0)
    for entry in entries:
        lateral = rng.uniform(-0.7, 0.7, 3000)
        vertical = rng.uniform(-0.1, 0.25, 3000)
        forward = np.where(rng.random(3000) < 0.8, 20.0, 60.0)
        write_velodyne_bin(tmp_path / "kitti" / entry.velodyne,
                           np.stack([forward, -lateral * forward, -vertical * forward], 1))
    test_list = write_kitti_list(tmp_path / "test.txt", entries)
    stems = write_make3d_fixture(tmp_path / "make3d")
    for stem in stems:
        write_make3d_mat(tmp_path / "make3d" / "Gridlaserdata" / f"depth_sph_corr-{stem}.mat", np.full((55, 305), 30.0))
    overrides = [f"data.kitti.root={tmp_path / 'kitti'}", f"data.kitti.test_list={test_list}",
                 f"data.make3d.root={tmp_path / 'make3d'}"]
    return load_config(TINY, overrides), overrides


def _evaluate(cfg, metres, out):
    return evaluate(cfg, {"generator": None, "task_network": ConstantDepth(metres)}, out)


def test_exact_prediction_has_zero_error(flat_world, tmp_path):
    cfg, _ = flat_world
    results = _evaluate(cfg, 20.0, tmp_path / "exact")
    cap50 = results["kitti_eigen_cap50"]["metrics"]  # the 60 m points are outside the 50 m cap
    assert cap50["abs_rel"] == pytest.approx(0.0, abs=1e-6) and cap50["a1"] == 1.0
    assert cap50["image_count"] == 2
    cap80 = results["kitti_eigen_cap80"]["metrics"]
    # under the 80 m cap the visible 60 m points count: each has error 40/60 and fails δ<1.25
    assert 0.0 < cap80["a1"] < 1.0
    assert cap80["abs_rel"] == pytest.approx((1.0 - cap80["a1"]) * 40 / 60, rel=1e-6)


def test_known_errors_and_prediction_clamp(flat_world, tmp_path):
    cfg, _ = flat_world
    half = _evaluate(cfg, 10.0, tmp_path / "half")["kitti_eigen_cap50"]["metrics"]
    assert half["abs_rel"] == pytest.approx(0.5, abs=1e-5)
    assert half["sq_rel"] == pytest.approx(100 / 20, abs=1e-3)
    assert half["rmse"] == pytest.approx(10.0, abs=1e-3)
    assert half["rmse_log"] == pytest.approx(math.log(2), abs=1e-5)
    assert (half["a1"], half["a2"], half["a3"]) == (0.0, 0.0, 0.0)  # ratio 2 > 1.25^3
    far = _evaluate(cfg, 79.0, tmp_path / "far")
    assert far["kitti_eigen_cap50"]["metrics"]["abs_rel"] == pytest.approx((50 - 20) / 20, abs=1e-4)  # clamped
    make3d = far["make3d_c1"]["metrics"]
    assert make3d["abs_rel"] == pytest.approx((70 - 30) / 30, abs=1e-4)  # Make3D clamps to 70 m


def test_make3d_known_errors_and_metrics_file(flat_world, tmp_path):
    cfg, _ = flat_world
    _evaluate(cfg, 15.0, tmp_path / "out")
    written = json.loads((tmp_path / "out" / "metrics.json").read_text())
    make3d = written["make3d_c1"]["metrics"]
    assert make3d["abs_rel"] == pytest.approx(0.5, abs=1e-4)
    assert make3d["rmse"] == pytest.approx(15.0, abs=1e-3)
    assert make3d["sq_rel"] == pytest.approx(225 / 30, abs=1e-3)
    assert make3d["rmse_log10"] == pytest.approx(math.log10(2), abs=1e-4)
    protocol = written["kitti_eigen_cap80"]["protocol"]
    assert (protocol["crop"], protocol["cap"], protocol["image_count"], protocol["median_scaling"]) == \
        ("garg", 80.0, 2, False)
    table = (tmp_path / "out" / "table_2_1_cap80.md").read_text()
    assert "| SharinGAN (proposed) | paper | 0.116 |" in table and "| ours |" in table
    assert (tmp_path / "out" / "table_2_2.json").is_file()


def test_missing_velodyne_raises_naming_the_file(flat_world, tmp_path):
    cfg, _ = flat_world
    entry_bin = sorted((Path(cfg.data.kitti.root)).rglob("*.bin"))[0]
    entry_bin.unlink()
    with pytest.raises(FileNotFoundError, match=entry_bin.name):
        _evaluate(cfg, 20.0, tmp_path / "x")


def test_networks_checkpoint_round_trip_and_task_check(tmp_path):
    cfg = load_config(TINY)
    networks = build_networks(cfg)
    path = save_networks(tmp_path / "n.pt", cfg, networks, stage="train", step=3)
    loaded, stored, payload = load_networks(path, task="depth")
    assert payload["task"] == "depth" and payload["input_size"] == [32, 64] and payload["step"] == 3
    for name in ("generator", "critic", "task_network"):
        for key, value in networks[name].state_dict().items():
            assert torch.equal(loaded[name].state_dict()[key], value)
    with pytest.raises(ValueError, match="task 'depth', not 'normals'"):
        load_networks(path, task="normals")
    torch.save({"state_dict": {}}, tmp_path / "lightning.ckpt")
    with pytest.raises(ValueError, match="not a SharinGAN networks checkpoint"):
        load_networks(tmp_path / "lightning.ckpt")
    only_task = save_networks(tmp_path / "t.pt", cfg, {"task_network": networks["task_network"]}, "pretrain_task")
    assert load_networks(only_task)[0]["generator"] is None


def test_eval_cli_on_a_checkpoint(flat_world, tmp_path):
    cfg, overrides = flat_world
    checkpoint = save_networks(tmp_path / "n.pt", cfg, build_networks(cfg), stage="train")
    eval_main(["--checkpoint", str(checkpoint), "--out", str(tmp_path / "cli"), "eval.benchmarks=[make3d]"])
    written = json.loads((tmp_path / "cli" / "metrics.json").read_text())
    assert list(written) == ["make3d_c1"] and written["make3d_c1"]["protocol"]["image_count"] == 2


def test_predict_writes_colour_and_16bit_metric_png(tmp_path):
    cfg = load_config(TINY)
    torch.manual_seed(0)
    networks = build_networks(cfg)
    checkpoint = save_networks(tmp_path / "n.pt", cfg, networks, stage="train")
    images = tmp_path / "images"
    images.mkdir()
    picture = np.random.default_rng(0).integers(0, 256, (40, 100, 3), dtype=np.uint8)
    cv2.imwrite(str(images / "a.png"), picture)
    cv2.imwrite(str(images / "b.jpg"), picture)
    written = predict_main(["--checkpoint", str(checkpoint), "--input", str(images), "--out", str(tmp_path / "o")])
    assert sorted(p.name for p in written) == ["a_depth.png", "a_depth16.png", "b_depth.png", "b_depth16.png"]
    colour = cv2.imread(str(tmp_path / "o" / "a_depth.png"), cv2.IMREAD_UNCHANGED)
    assert colour.shape == (40, 100, 3) and colour.dtype == np.uint8
    metric = cv2.imread(str(tmp_path / "o" / "a_depth16.png"), cv2.IMREAD_UNCHANGED)
    assert metric.shape == (40, 100) and metric.dtype == np.uint16
    loaded, _, _ = load_networks(checkpoint)
    from PIL import Image

    from sharingan.data.images import to_network
    rgb = Image.fromarray(cv2.cvtColor(picture, cv2.COLOR_BGR2RGB))  # resized like the datasets: Pillow bicubic
    x = to_network(np.asarray(rgb.resize((64, 32), Image.Resampling.BICUBIC)))
    with torch.no_grad():
        depth = predict_depth(loaded["generator"], loaded["task_network"], x[None])[0, 0].numpy()
    expected = cv2.resize(depth, (100, 40), interpolation=cv2.INTER_LINEAR)
    assert np.abs(metric / 256.0 - expected).max() <= 1 / 256 + 1e-4
    with pytest.raises(FileNotFoundError, match="image or folder not found: .*none"):
        predict_main(["--checkpoint", str(checkpoint), "--input", str(tmp_path / "none"), "--out", str(tmp_path)])


def test_depth_task_module_provides_the_interface():
    module = load_task("depth")
    assert module.NAME == "depth" and module.MONITOR == ("val/a1", "max")
    with pytest.raises(ValueError, match="unknown SharinGAN task"):
        load_task("nonexistent")
