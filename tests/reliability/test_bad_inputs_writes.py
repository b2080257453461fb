"""Interrupted writes: a crash or Ctrl-C while writing a checkpoint, a weights file, a results table or a
converted dataset image leaves the previous file intact and no temporary file behind."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import common.checkpoints as checkpoints
from common.checkpoints import load_torch, load_weights, save_torch, save_weights
from common.results import write_results_table

ROOT = Path(__file__).resolve().parents[2]


def files_in(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


def half_write_then_interrupt(*args, **kwargs):
    """Stands in for a serialiser killed mid-write: some bytes reach the file, then the process is stopped."""
    target = next((a for a in args if hasattr(a, "write")), None)
    if target is not None:
        target.write(b"PARTIAL" if "b" in getattr(target, "mode", "b") else "PARTIAL")
    raise KeyboardInterrupt("killed mid-write")


def test_interrupted_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    save_torch({"step": 1, "weights": torch.ones(3)}, tmp_path / "last.pt")
    monkeypatch.setattr(checkpoints.torch, "save", half_write_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        save_torch({"step": 2, "weights": torch.zeros(3)}, tmp_path / "last.pt")
    monkeypatch.undo()
    assert load_torch(tmp_path / "last.pt")["step"] == 1
    assert files_in(tmp_path) == ["last.pt"]


def test_interrupted_safetensors_write_keeps_the_previous_file(tmp_path, monkeypatch):
    save_weights({"w": torch.ones(2)}, tmp_path / "model.safetensors", {"variant": "ldznet"})

    def partial_save(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\0" * 7)
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(checkpoints, "save_file", partial_save)
    with pytest.raises(KeyboardInterrupt):
        save_weights({"w": torch.zeros(2)}, tmp_path / "model.safetensors")
    monkeypatch.undo()
    state, metadata = load_weights(tmp_path / "model.safetensors")
    assert torch.equal(state["w"], torch.ones(2)) and metadata == {"variant": "ldznet"}
    assert files_in(tmp_path) == ["model.safetensors"]


@pytest.mark.parametrize("failing", ["json", "markdown"])
def test_interrupted_results_table_keeps_the_previous_files(tmp_path, monkeypatch, failing):
    stem = tmp_path / "table_2_1"
    write_results_table(stem, "Table 2.1", [{"method": "ours", "abs_rel": 0.12}], ["abs_rel"])
    before = {suffix: stem.with_suffix(suffix).read_text() for suffix in (".md", ".json")}
    real_dump = json.dump

    if failing == "json":
        def dump(obj, file, **kwargs):
            file.write('{"title": "Table 2.1", "ours": [')
            raise KeyboardInterrupt("killed mid-write")
        monkeypatch.setattr(checkpoints.json, "dump", dump)
    else:  # the JSON is written, then the process dies while the Markdown's bytes are being flushed
        calls = []
        real_fsync = os.fsync

        def fsync(descriptor):
            calls.append(descriptor)
            if len(calls) == 2:
                raise KeyboardInterrupt("killed mid-write")
            real_fsync(descriptor)
        monkeypatch.setattr(checkpoints.os, "fsync", fsync)
    with pytest.raises(KeyboardInterrupt):
        write_results_table(stem, "Table 2.1", [{"method": "ours", "abs_rel": 0.5}], ["abs_rel"])
    monkeypatch.undo()
    assert json.dump is real_dump
    assert stem.with_suffix(".md").read_text() == before[".md"]
    json.loads(stem.with_suffix(".json").read_text())  # whole, never half-written
    if failing == "json":
        assert stem.with_suffix(".json").read_text() == before[".json"]
    assert files_in(tmp_path) == ["table_2_1.json", "table_2_1.md"]


def test_interrupted_networks_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    from common.config import load_config
    from sharingan.checkpoints import load_networks, save_networks
    from sharingan.tasks import load_task

    cfg = load_config(ROOT / "experiments" / "chapter2" / "depth_tiny.yaml")
    networks = load_task("depth").build_networks(cfg)
    path = save_networks(tmp_path / "networks_last.pt", cfg, networks, stage="train", step=10)
    monkeypatch.setattr(checkpoints.torch, "save", half_write_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        save_networks(path, cfg, networks, stage="train", step=20)
    monkeypatch.undo()
    assert load_networks(path, task="depth")[2]["step"] == 10
    assert files_in(tmp_path) == ["networks_last.pt"]


def test_interrupted_dataset_image_conversion_keeps_the_previous_image(tmp_path, monkeypatch):
    from PIL import Image

    from common.images import read_rgb
    from ldznet.data.transforms import write_image

    old = np.full((4, 6, 3), 10, np.uint8)
    write_image(tmp_path / "image.png", old)

    def interrupted_save(self, fp, *args, **kwargs):
        if isinstance(fp, (str, os.PathLike)):
            Path(fp).write_bytes(b"\x89PNG partial")
        else:
            fp.write(b"\x89PNG partial")
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(Image.Image, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        write_image(tmp_path / "image.png", np.zeros((4, 6, 3), np.uint8))
    monkeypatch.undo()
    assert np.array_equal(read_rgb(tmp_path / "image.png"), old)
    assert files_in(tmp_path) == ["image.png"]
