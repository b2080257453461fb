"""Smoke test: the whole depth pipeline (verify -> pretrain G -> pretrain T -> train rows -> evaluate ->
tables) on fixtures written in the real formats, tiny networks, CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from common.config import REPO_ROOT, load_config
from common.testing import write_depth_fixtures
from sharingan.lit_module import SharinGANModule
from sharingan.pipeline import run_pipeline
from sharingan.schedule import batch_chunks, split_batch
from sharingan.train import main as train_main
from sharingan.train import run_stage

TINY = REPO_ROOT / "experiments" / "chapter2" / "depth_tiny.yaml"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("depth_data")
    return write_depth_fixtures(root)


@pytest.fixture(scope="module")
def pipeline(data, tmp_path_factory):
    root = tmp_path_factory.mktemp("depth_runs")
    return run_pipeline("depth", TINY, data, root)


def test_pipeline_runs_every_stage_and_row(pipeline):
    out = Path(pipeline["out_dir"])
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["rows"]) == {"All synthetic (baseline)", "All real (baseline)", "SharinGAN (proposed)",
                                    "SharinGAN, no reconstruction", "No SharinGAN, no reconstruction"}
    assert summary["data"]["vkitti_train"] == 6 and summary["data"]["make3d_test"] == 2
    for row in summary["rows"].values():
        metrics = json.loads(Path(row["metrics"]).read_text())
        assert {"kitti_eigen_cap50", "kitti_eigen_cap80", "make3d_c1"} <= set(metrics)
        assert Path(row["checkpoint"]).is_file()
    baseline = summary["rows"]["All synthetic (baseline)"]
    assert baseline["checkpoint"] == summary["pretrained"]["task_network"]  # stage 2 is the baseline row
    all_real = load_config(Path(summary["rows"]["All real (baseline)"]["run_dir"]) / "config.yaml")
    assert all_real.init.task_network is None and all_real.loss.l1 == 0.0  # from scratch, KITTI only
    sharingan = load_config(Path(summary["rows"]["SharinGAN (proposed)"]["run_dir"]) / "config.yaml")
    assert sharingan.init.generator == summary["pretrained"]["generator"]
    table = (out / "tables" / "table_2_5.md").read_text()
    for name in ("No SharinGAN, no reconstruction", "SharinGAN, no reconstruction", "SharinGAN (proposed)"):
        assert f"| {name} | paper |" in table and f"| {name} | ours |" in table
    assert "All synthetic" not in table
    assert "| All synthetic (baseline) | ours |" in (out / "tables" / "table_2_1_cap80.md").read_text()


def test_step_ratio_five_one_one(pipeline):
    rows = json.loads((Path(pipeline["out_dir"]) / "summary.json").read_text())["rows"]
    sharingan = json.loads((Path(rows["SharinGAN (proposed)"]["run_dir"]) / "metrics.json").read_text())
    assert sharingan["global_steps"] == 2 * (5 + 1 + 1)  # Lightning counts every optimiser step
    assert sharingan["monitor"] == "val/a1" and sharingan["best_validation"] is not None
    ablation = json.loads((Path(rows["No SharinGAN, no reconstruction"]["run_dir"]) / "metrics.json").read_text())
    assert ablation["global_steps"] == 2  # T only


def test_tensorboard_has_loss_terms_and_figure_2_4_panels(pipeline):
    rows = json.loads((Path(pipeline["out_dir"]) / "summary.json").read_text())["rows"]
    events = EventAccumulator(str(Path(rows["SharinGAN (proposed)"]["run_dir"]) / "tb"))
    events.Reload()
    scalars, images = set(events.Tags()["scalars"]), set(events.Tags()["images"])
    assert {"train/critic/gradient_penalty", "train/critic/wasserstein", "train/generator/adversarial",
            "train/generator/reconstruction", "train/task/l1_synthetic", "train/task/geometric_consistency",
            "train/task/smoothness", "val/a1"} <= scalars
    for domain in ("synthetic", "real"):
        assert {f"images/{domain}/x", f"images/{domain}/G(x)", f"images/{domain}/abs_x_minus_G(x)",
                f"images/{domain}/depth_predicted"} <= images
    assert "images/synthetic/depth_ground_truth" in images
    assert {"val_images/depth_predicted", "val_images/depth_ground_truth"} <= images  # KITTI val, velodyne GT


def test_fresh_batches_and_five_three_one_ratio(tmp_path):
    """The face schedule (5 critic, 3 generator steps on fresh batches, 1 task step) on the depth data."""
    data = write_depth_fixtures(tmp_path / "data", frames=5)  # 10 synthetic samples = 5 chunks of 2
    cfg = load_config(TINY, [*data, "sharingan.steps.generator=3", "sharingan.fresh_batch_per_step=true",
                             "schedule.train_iterations=1", "eval.validate=false"])
    assert batch_chunks(cfg) == 5
    result = run_stage(cfg, "train", tmp_path)
    metrics = json.loads((Path(result["run_dir"]) / "metrics.json").read_text())
    assert metrics["global_steps"] == 5 + 3 + 1
    assert Path(result["checkpoint"]).name == "networks_last.pt"


def test_split_batch_chunks_nested_dicts():
    batch = {"synthetic": {"image": torch.arange(10).view(10, 1), "path": [str(i) for i in range(10)]}}
    parts = split_batch(batch, 5)
    assert [p["synthetic"]["image"].flatten().tolist() for p in parts] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    assert parts[4]["synthetic"]["path"] == ["8", "9"]
    with pytest.raises(ValueError, match="cannot be split"):
        split_batch({"x": torch.zeros(3)}, 2)


def test_one_iteration_updates_generator_critic_and_task(data):
    cfg = load_config(TINY, data)
    module = SharinGANModule(cfg)
    before = {name: [p.detach().clone() for p in net.parameters()] for name, net in module.networks().items()}
    from sharingan.tasks.depth import build_datamodule
    loader = build_datamodule(cfg, "train").train_dataloader()
    import pytorch_lightning as pl
    trainer = pl.Trainer(max_steps=7, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, accelerator="cpu")
    trainer.fit(module, train_dataloaders=loader)
    assert module.iteration == 1
    for name, net in module.networks().items():
        changed = any(not torch.equal(a, b) for a, b in zip(before[name], net.parameters()))
        assert changed, f"{name} was not updated"


def test_train_cli_pretrain_task_stage(data, tmp_path, capsys):
    result = train_main([str(TINY), "--stage", "pretrain_task", "--root", str(tmp_path), *data])
    assert Path(result["checkpoint"]).is_file()
    assert "networks checkpoint" in capsys.readouterr().out
    with pytest.raises(Exception, match="schedul|unknown config key"):
        train_main([str(TINY), "--root", str(tmp_path), "schedule.no_such_key=1"])


def test_several_seeds_give_mean_and_std(data, tmp_path):
    result = run_pipeline("depth", TINY, [*data, "pipeline.rows=[depth_sharingan.yaml]", "pipeline.seeds=[1,2]",
                                          "pipeline.stages=[pretrain_task,pretrain_generator,train,evaluate,tables]",
                                          "eval.benchmarks=[make3d]", "eval.validate=false"], tmp_path)
    row = result["rows"]["SharinGAN (proposed)"]
    assert [run["seed"] for run in row["runs"]] == [1, 2]
    combined = json.loads(Path(row["metrics"]).read_text())["make3d_c1"]
    singles = [json.loads(Path(run["metrics"]).read_text())["make3d_c1"]["metrics"]["rmse"] for run in row["runs"]]
    assert combined["metrics"]["rmse"]["mean"] == pytest.approx(sum(singles) / 2)
    assert combined["metrics"]["rmse"]["n"] == 2 and combined["protocol"]["seeds"] == [1, 2]
    assert "±" in (Path(result["out_dir"]) / "tables" / "table_2_2.md").read_text()


def test_resume_continues_from_lightning_checkpoint(data, tmp_path):
    overrides = [*data, "eval.validate=false", "schedule.checkpoint_every=1"]
    first = train_main([str(TINY), "--root", str(tmp_path), *overrides])
    last = Path(first["run_dir"]) / "checkpoints" / "last.ckpt"
    assert last.is_file()
    second = train_main([str(TINY), "--root", str(tmp_path), "--resume", str(last), *overrides,
                         "schedule.train_iterations=3"])
    metrics = json.loads((Path(second["run_dir"]) / "metrics.json").read_text())
    assert metrics["global_steps"] == 3 * 7  # 2 iterations restored + 1 new one


def test_verify_names_the_missing_root_and_how_to_set_it(data):
    from sharingan.tasks.depth import verify_data

    cfg = load_config(TINY, [*data, "data.kitti.root=/nonexistent/kitti"])
    with pytest.raises(FileNotFoundError, match="data.kitti.root=PATH or the environment variable KITTI_ROOT"):
        verify_data(cfg, ["train"])
    cfg = load_config(TINY, [*data, "data.kitti.test_list=/nonexistent/test.txt"])
    with pytest.raises(FileNotFoundError, match="/nonexistent/test.txt"):
        verify_data(cfg, ["evaluate"])


def test_an_untrained_row_stays_untrained_when_every_row_is_lengthened():
    """The all-synthetic row (train_iterations 0 in its file) is T after stage 2; an override that lengthens the
    end-to-end stage of every row must not train it (it would become a copy of the "no SharinGAN" row: the
    miniature's study found the two rows identical to the last weight)."""
    from sharingan.pipeline import row_config

    chapter2 = REPO_ROOT / "experiments" / "chapter2"
    base = load_config(chapter2 / "depth_tiny.yaml", ["schedule.train_iterations=300"])
    overrides = ["schedule.train_iterations=300"]
    assert row_config(base, chapter2 / "depth_all_synthetic.yaml", overrides).schedule.train_iterations == 0
    assert row_config(base, chapter2 / "depth_no_sharingan.yaml", overrides).schedule.train_iterations == 300
    assert row_config(base, chapter2 / "depth_sharingan.yaml", overrides).schedule.train_iterations == 300
