"""Bad depth-data inputs (public functions of the depth loaders): calibration files missing a key, truncated
depth and image PNGs. Each error names the file and the key or value at fault."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sharingan.data.kitti import (
    KittiStereoDataset,
    focal_baseline,
    generate_depth_map,
    write_calib_files,
    write_kitti_fixture,
    write_velodyne_bin,
)
from sharingan.data.vkitti import read_depth_png_cm, write_depth_png_cm


def drop_line(path: Path, key: str) -> Path:
    lines = [line for line in path.read_text().splitlines() if not line.startswith(f"{key}:")]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("key", ["P_rect_03", "S_rect_02"])
def test_cam_to_cam_missing_a_key_names_file_and_key(tmp_path, key):
    cam, _ = write_calib_files(tmp_path, image_size=(20, 40))
    drop_line(cam, key)
    with pytest.raises(ValueError, match=rf"calib_cam_to_cam\.txt: key '{key}' missing"):
        focal_baseline(tmp_path)


def test_velo_to_cam_missing_translation_names_file_and_key(tmp_path):
    _, velo = write_calib_files(tmp_path, image_size=(20, 40))
    drop_line(velo, "T")
    write_velodyne_bin(tmp_path / "scan.bin", np.array([[5.0, 0.0, 0.0, 1.0]]))
    with pytest.raises(ValueError, match=r"calib_velo_to_cam\.txt: key 'T' missing"):
        generate_depth_map(tmp_path, tmp_path / "scan.bin")


def test_calib_value_that_is_not_numbers_names_the_key(tmp_path):
    cam, _ = write_calib_files(tmp_path, image_size=(20, 40))
    text = cam.read_text().replace("R_rect_00:", "R_rect_00: identity #", 1)
    cam.write_text(text)
    write_velodyne_bin(tmp_path / "scan.bin", np.array([[5.0, 0.0, 0.0, 1.0]]))
    with pytest.raises(ValueError, match=r"calib_cam_to_cam\.txt: key 'R_rect_00' missing or not 9 numbers"):
        generate_depth_map(tmp_path, tmp_path / "scan.bin")


def test_truncated_16bit_depth_png_is_named(tmp_path):
    path = write_depth_png_cm(tmp_path / "00000.png", np.arange(40 * 50).reshape(40, 50) * 30.0)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"00000\.png"):
        read_depth_png_cm(path)


def test_truncated_kitti_png_is_named(tmp_path):
    entries = write_kitti_fixture(tmp_path, frames=1, image_size=(24, 48))
    right = tmp_path / entries[0].right
    data = right.read_bytes()
    right.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=rf"{right.name}"):
        KittiStereoDataset(tmp_path, entries, size=(16, 32))[0]


def test_truncated_jpeg_is_an_error_not_a_grey_picture(tmp_path):
    from common.images import read_rgb
    from sharingan.data.images import write_rgb

    path = write_rgb(tmp_path / "frame.jpg", np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"frame\.jpg"):
        read_rgb(path)


def test_vkitti_image_and_depth_of_different_sizes_are_refused(tmp_path):
    from sharingan.data.images import write_rgb
    from sharingan.data.vkitti import VirtualKittiDataset, depth_path_for, write_vkitti_fixture

    entries = write_vkitti_fixture(tmp_path, variations=("clone",), frames=1, size=(24, 80))
    write_depth_png_cm(tmp_path / depth_path_for(entries[0]), np.full((30, 70), 500.0))
    with pytest.raises(ValueError, match=r"\(24, 80\).*\(30, 70\)"):
        VirtualKittiDataset(tmp_path, entries, size=(16, 32))[0]
    write_rgb(tmp_path / entries[0], np.zeros((30, 70, 3), np.uint8))  # matching sizes load again
    assert VirtualKittiDataset(tmp_path, entries, size=(16, 32))[0]["image"].shape == (3, 16, 32)


def test_kitti_stereo_views_of_different_sizes_are_refused(tmp_path):
    from sharingan.data.images import write_rgb

    entries = write_kitti_fixture(tmp_path, frames=1, image_size=(24, 48))
    write_rgb(tmp_path / entries[0].right, np.zeros((20, 48, 3), np.uint8))
    with pytest.raises(ValueError, match=r"stereo pair differs in size.*image_03"):
        KittiStereoDataset(tmp_path, entries, size=(16, 32))[0]


def test_truncated_make3d_mat_is_named(tmp_path):
    from sharingan.data.make3d import read_make3d_depth, write_make3d_mat

    path = write_make3d_mat(tmp_path / "depth_sph_corr-x.mat", np.full((55, 305), 10.0))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cannot read MATLAB file .*depth_sph_corr-x\.mat"):
        read_make3d_depth(path)


def test_depth_predict_converts_odd_images_with_a_note(tmp_path, capsys):
    import cv2
    from omegaconf import OmegaConf

    from sharingan.tasks.depth import predict

    class ConstantDepth(__import__("torch").nn.Module):
        def forward(self, x):
            return [x[:, :1] * 0]  # network output 0 -> 40 m

    grey16 = (np.arange(20 * 30).reshape(20, 30) * 100).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "grey16.png"), grey16)
    written = predict(OmegaConf.create({"data": {"size": [16, 32]}}),
                      {"generator": None, "task_network": ConstantDepth()}, [tmp_path / "grey16.png"], tmp_path / "out")
    assert "16-bit" in capsys.readouterr().out
    depth16 = cv2.imread(str(written[1]), cv2.IMREAD_UNCHANGED)
    assert depth16.dtype == np.uint16 and depth16.shape == (20, 30)
    assert np.all(depth16 == 40 * 256)  # network output 0 is the middle of [0, 80] m, stored as metres x 256
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["grey16_depth.png", "grey16_depth16.png"]
