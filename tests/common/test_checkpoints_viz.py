"""Atomic writes, safe loading, and the pictures."""

import os
import pickle

import cv2
import numpy as np
import pytest
import torch

from common.checkpoints import atomic_write, load_torch, load_weights, save_torch, save_weights, write_json
from common.viz import colorize_depth, image_grid, normals_to_rgb, overlay_mask, save_png


def test_interrupted_write_keeps_previous_file(tmp_path):
    path = tmp_path / "metrics.json"
    write_json(path, {"abs_rel": 0.1})
    with pytest.raises(RuntimeError), atomic_write(path, "w") as file:
        file.write('{"abs_rel": 0.')
        raise RuntimeError("killed mid-write")
    assert path.read_text().strip().startswith("{") and '"abs_rel": 0.1' in path.read_text()
    assert os.listdir(tmp_path) == ["metrics.json"]  # no temporary file left behind


def test_torch_round_trip_and_malicious_pickle_refused(tmp_path):
    save_torch({"step": 3, "weights": torch.ones(2)}, tmp_path / "ok.pt")
    assert load_torch(tmp_path / "ok.pt")["step"] == 3

    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with open(tmp_path / "evil.pt", "wb") as file:
        pickle.dump(Exploit(), file)
    with pytest.raises(ValueError, match="evil.pt"):
        load_torch(tmp_path / "evil.pt")
    assert not marker.exists()
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_torch(tmp_path / "missing.pt")


def test_safetensors_round_trip_with_metadata(tmp_path):
    state = {"a": torch.arange(6.0).reshape(2, 3).t(), "b": torch.zeros(1)}
    save_weights(state, tmp_path / "w.safetensors", {"task": "depth", "size": 192})
    loaded, metadata = load_weights(tmp_path / "w.safetensors")
    assert torch.equal(loaded["a"], state["a"]) and metadata == {"task": "depth", "size": "192"}
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="bad.safetensors"):
        load_weights(tmp_path / "bad.safetensors")


def test_colorize_depth_percentile_range_and_invalid_pixels():
    depth = np.linspace(1, 100, 100).reshape(10, 10)
    depth[0, 0] = 0  # no ground truth
    colour = colorize_depth(depth)
    assert colour.shape == (10, 10, 3) and colour.dtype == np.uint8
    assert (colour[0, 0] == 0).all()
    # everything at or above the 95th percentile saturates to the brightest magma colour
    brightest = cv2.cvtColor(cv2.applyColorMap(np.full((1, 1), 255, np.uint8), cv2.COLORMAP_MAGMA),
                             cv2.COLOR_BGR2RGB)[0, 0]
    assert (colour[9, 9] == brightest).all() and (colour[9, 8] == brightest).all()
    assert not (colour[5, 0] == brightest).all()
    batch = colorize_depth(torch.from_numpy(depth)[None, None].float().repeat(2, 1, 1, 1))
    assert batch.shape == (2, 3, 10, 10) and 0 <= batch.min() and batch.max() <= 1


def test_normals_overlay_grid_and_png(tmp_path):
    up = torch.zeros(1, 3, 2, 2)
    up[:, 2] = 1
    rgb = normals_to_rgb(up)
    assert torch.allclose(rgb[0, :, 0, 0], torch.tensor([0.5, 0.5, 1.0]))
    assert (normals_to_rgb(np.dstack([np.zeros((2, 2)), np.zeros((2, 2)), np.ones((2, 2))]))[0, 0] ==
            [128, 128, 255]).all()
    image = np.zeros((4, 4, 3), np.uint8)
    mask = np.zeros((4, 4))
    mask[0, 0] = 1
    blended = overlay_mask(image, mask, color=(255, 0, 0), alpha=0.5)
    assert tuple(blended[0, 0]) == (128, 0, 0) and tuple(blended[1, 1]) == (0, 0, 0)
    tensor_overlay = overlay_mask(torch.zeros(1, 3, 4, 4), torch.from_numpy(mask)[None, None])
    assert tensor_overlay[0, 0, 0, 0] == pytest.approx(0.5)
    grid = image_grid([torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4)], nrow=2)
    assert grid.shape == (3, 2 * 4 + 3 * 2, 2 * 4 + 3 * 2)
    depth16 = (np.arange(12).reshape(3, 4) * 5000).astype(np.uint16)
    save_png(tmp_path / "d.png", depth16)
    assert np.array_equal(cv2.imread(str(tmp_path / "d.png"), cv2.IMREAD_UNCHANGED), depth16)
    save_png(tmp_path / "c.png", blended)
    assert tuple(cv2.imread(str(tmp_path / "c.png"))[0, 0]) == (0, 0, 128)  # stored as BGR
