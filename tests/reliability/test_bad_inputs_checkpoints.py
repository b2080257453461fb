"""Checkpoints of another task, or with weights that do not fit the network: a mismatch error naming the file,
never a silent partial load (the SharinGAN side; LD-ZNet variants are tested in tests/ldznet)."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.config import load_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def depth_checkpoint(tmp_path_factory):
    from sharingan.checkpoints import save_networks
    from sharingan.tasks import load_task

    cfg = load_config(ROOT / "experiments" / "chapter2" / "depth_tiny.yaml")
    networks = load_task("depth").build_networks(cfg)
    path = tmp_path_factory.mktemp("depth") / "networks_pretrain_task.pt"
    return save_networks(path, cfg, networks, stage="pretrain_task", step=2)


def test_pseudo_labels_refuse_a_depth_checkpoint(depth_checkpoint, tmp_path):
    from sharingan.pseudo_labels import label_from_checkpoint

    with pytest.raises(ValueError, match=rf"{depth_checkpoint.name} is for task 'depth', not 'normals'"):
        label_from_checkpoint(depth_checkpoint, tmp_path / "celeba", tmp_path / "labels")
    assert not (tmp_path / "labels").exists()


def test_face_initialisation_from_a_depth_checkpoint_is_refused(depth_checkpoint):
    from sharingan.checkpoints import load_pretrained
    from sharingan.tasks import load_task

    cfg = load_config(ROOT / "experiments" / "chapter2" / "faces_tiny.yaml")
    sfsnet = load_task("normals").build_networks(cfg)["task_network"]
    before = {key: value.clone() for key, value in sfsnet.state_dict().items()}
    with pytest.raises(ValueError, match=rf"{depth_checkpoint.name} is for task 'depth', not 'normals'"):
        load_pretrained(sfsnet, depth_checkpoint, "task_network", "normals")
    assert all((sfsnet.state_dict()[key] == value).all() for key, value in before.items())  # nothing loaded


def test_weights_that_do_not_fit_the_configured_width_are_refused(depth_checkpoint):
    from sharingan.checkpoints import load_networks

    with pytest.raises(ValueError, match=rf"{depth_checkpoint.name}: weights of generator do not fit"):
        load_networks(depth_checkpoint, "depth", ["model.generator_width=0.25"])
