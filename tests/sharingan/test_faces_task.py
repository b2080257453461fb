"""The face task module plugged into the shared SharinGAN machinery, on tiny fixtures in the real formats."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from common.config import load_config
from common.images import read_rgb
from common.trainer import build_trainer
from sharingan.checkpoints import save_networks
from sharingan.data.celeba import write_celeba_fixture
from sharingan.data.multipie import write_multipie_fixture
from sharingan.data.photoface import write_photoface_fixture
from sharingan.data.sfsnet_synthetic import read_face_csv, write_sfsnet_synthetic_fixture
from sharingan.lit_module import SharinGANModule
from sharingan.models.sfsnet import decode_normals
from sharingan.tasks import load_task

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "experiments" / "chapter2" / "faces_tiny.yaml"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("faces")
    write_sfsnet_synthetic_fixture(base / "synthetic", 12, image_size=64, seed=0)
    write_celeba_fixture(base / "celeba", counts=(12, 2, 2), seed=1)
    write_photoface_fixture(base / "photoface", subjects=("1001", "1002", "2001"), test_subjects=1, image_size=64)
    return base


def tiny_config(world, *extra):
    return load_config(TINY, [f"data.synthetic_root={world / 'synthetic'}", f"data.celeba_root={world / 'celeba'}",
                              f"data.photoface_root={world / 'photoface'}", *extra])


def test_interface_and_networks(world):
    task = load_task("normals")
    cfg = tiny_config(world)
    networks = task.build_networks(cfg)
    assert set(networks) == {"generator", "critic", "task_network"}
    assert task.MONITOR == ("val/mae_deg", "min")
    assert (ROOT / task.PIPELINE_CONFIG).is_file()


def test_pseudo_label_command_writes_what_the_real_loader_reads(world, tmp_path):
    from sharingan import pseudo_labels

    task = load_task("normals")
    cfg = tiny_config(world)
    networks = task.build_networks(cfg)
    checkpoint = save_networks(tmp_path / "pretrained.pt", cfg, {"task_network": networks["task_network"]},
                               "pretrain_task")
    csv_path = pseudo_labels.main(["--checkpoint", str(checkpoint), "--input", str(world / "celeba"),
                                   "--out", str(tmp_path / "labels"), "--split", "train", "--crop-size", "160"])
    assert csv_path == tmp_path / "labels" / "celeba_train.csv"
    records = read_face_csv(csv_path)
    assert len(records) == 12
    # the stored labels are the network's outputs on the stored crop (8-bit PNG quantisation aside)
    network = networks["task_network"].eval()
    crop = torch.from_numpy(read_rgb(records[0].image, pixels="unit_float")).permute(2, 0, 1)[None]
    with torch.no_grad():
        output = network(crop)
    stored = torch.from_numpy(read_rgb(records[0].normal, pixels="unit_float")).permute(2, 0, 1)[None]
    angle = torch.rad2deg(torch.acos((decode_normals(stored) * decode_normals(output["normal"])).sum(1).clamp(-1, 1)))
    assert angle.mean() < 3.0
    assert np.allclose(records[0].lighting, output["lighting"][0].numpy(), atol=2e-3)
    cfg = tiny_config(world, f"data.celeba_labels={tmp_path / 'labels'}")
    module = task.build_datamodule(cfg, "train")
    batch = next(iter(module.train_dataloader()))
    # 5 chunks (1 critic + 3 generator + 1 task batches) of data.batch_size = 2 per domain
    assert batch["synthetic"]["image"].shape == (10, 3, 64, 64)
    assert batch["real"]["normal"].shape == (10, 3, 64, 64) and batch["real"]["lighting"].shape == (10, 27)
    with pytest.raises(ValueError, match="task 'normals'|not 'depth'"):
        from sharingan.checkpoints import load_networks

        load_networks(checkpoint, task="depth")


def test_one_iteration_takes_5_critic_3_generator_1_task_steps(world, tmp_path):
    from sharingan import pseudo_labels

    task = load_task("normals")
    cfg = tiny_config(world)
    networks = task.build_networks(cfg)
    checkpoint = save_networks(tmp_path / "pretrained.pt", cfg, {"task_network": networks["task_network"]},
                               "pretrain_task")
    pseudo_labels.label_from_checkpoint(checkpoint, world / "celeba", tmp_path / "labels", crop_size=160)
    cfg = tiny_config(world, f"data.celeba_labels={tmp_path / 'labels'}", "trainer.max_steps=9")
    before = {name: [p.detach().clone() for p in net.parameters()] for name, net in networks.items()}
    module = SharinGANModule(cfg, networks)
    trainer = build_trainer(cfg.trainer, tmp_path / "run")
    trainer.fit(module, datamodule=task.build_datamodule(cfg, "train"))
    critic, generator, task_optimizer = module.optimizers()
    steps = [int(next(iter(o.optimizer.state.values()))["step"]) for o in (critic, generator, task_optimizer)]
    assert steps == [5, 3, 1]
    for name, net in networks.items():
        assert any(not torch.equal(a, b) for a, b in zip(before[name], net.parameters())), name
    logged = trainer.callback_metrics
    assert {"train/task/sfs_real/total", "train/task/sfs_synthetic/normal", "train/critic/loss"} <= set(logged)
    events = list((tmp_path / "run" / "tb").rglob("events.out.tfevents*"))
    assert events
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = EventAccumulator(str(events[0].parent)).Reload().Tags()["images"]
    for domain in ("synthetic", "real"):
        for name in ("normals", "albedo", "shading", "reconstruction", "G(x)"):
            assert f"images/{domain}/{name}" in tags


class NormalsFromImage(nn.Module):
    """An oracle 'SfSNet' whose normal output is its input (used with images that store the normals)."""

    def forward(self, image):
        batch = image.shape[0]
        return {"normal": image, "albedo": image, "lighting": torch.zeros(batch, 27)}


def test_photoface_evaluation_of_an_oracle_is_perfect(world, tmp_path):
    task = load_task("normals")
    root = tmp_path / "photoface"
    shutil.copytree(world / "photoface", root)
    for image in root.rglob("*_align.png"):
        shutil.copy(image.with_name(image.name.replace("_align", "_normal")), image)
    cfg = tiny_config(world, f"data.photoface_root={root}", "eval.row_name=null")
    metrics = task.evaluate(cfg, {"generator": None, "task_network": NormalsFromImage()}, tmp_path / "eval")
    result = metrics["photoface"]["metrics"]
    assert result["mae_deg"] < 1.0 and result["lt20"] == 100.0 and result["image_count"] == 4
    table = (tmp_path / "eval" / "table_2_3_photoface.md").read_text()
    assert "47.88" in table and "SfSNet, no SharinGAN (ours)" in table
    assert (tmp_path / "eval" / "metrics.json").is_file()


def test_multipie_evaluation_and_prediction_files(world, tmp_path):
    task = load_task("normals")
    write_multipie_fixture(tmp_path / "mpie", subjects=(1, 2), shots=(0, 5, 10))
    cfg = tiny_config(world, f"data.multipie_root={tmp_path / 'mpie'}", "data.photoface_root=null",
                      "eval.multipie.shots=[0,5,10]")
    networks = task.build_networks(cfg)
    metrics = task.evaluate(cfg, networks, tmp_path / "eval")
    multipie = metrics["multipie"]["metrics"]
    assert multipie["image_count"] == 6 and metrics["multipie"]["protocol"]["classes"] == 3
    assert 0.0 <= multipie["top1"] <= multipie["top2"] <= multipie["top3"] == 100.0
    assert (tmp_path / "eval" / "table_2_4_multipie.md").is_file()
    # several seeds: the pipeline's combination is readable by our tables (mean ± std)
    from sharingan.pipeline import combine_seeds

    combined = combine_seeds([metrics, metrics], [1, 2])
    assert combined["multipie"]["metrics"]["top1"]["std"] == 0.0
    (table,) = task.write_tables(cfg, {"two seeds": combined}, tmp_path / "seeds")
    assert "± 0.00" in table.read_text()
    inputs = sorted((tmp_path / "mpie").rglob("*.png"))[:2]
    written = task.predict(cfg, networks, inputs, tmp_path / "predict")
    names = {p.name for p in written}
    for kind in ("normals", "albedo", "shading", "reconstruction", "shared"):
        assert f"{inputs[0].stem}_{kind}.png" in names
    assert read_rgb(tmp_path / "predict" / f"{inputs[0].stem}_normals.png", pixels="unit_float").shape == (64, 64, 3)


def test_default_lists_are_the_real_ones_and_missing_images_are_named(world, monkeypatch):
    monkeypatch.delenv("PHOTOFACE_LISTS", raising=False)
    cfg = load_config(ROOT / "experiments" / "chapter2" / "faces_pipeline.yaml",
                      [f"data.photoface_root={world / 'photoface'}"])
    assert Path(cfg.data.photoface_lists) == ROOT / "sharingan" / "data" / "splits" / "photoface"  # shipped copies
    with pytest.raises(FileNotFoundError, match="6459 files missing: .*photoface-results/1053"):
        load_task("normals").verify_data(cfg, ["evaluate"])
