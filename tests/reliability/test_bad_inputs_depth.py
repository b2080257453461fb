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
