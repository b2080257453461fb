"""Depth datasets: fixtures written in the real on-disk formats and read back through the loaders."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from sharingan.data.images import colour_jitter
from sharingan.data.kitti import (
    KittiEntry,
    KittiStereoDataset,
    focal_baseline,
    generate_depth_map,
    load_velodyne_points,
    read_calib_file,
    read_kitti_list,
    stereo_flip,
    write_calib_files,
    write_kitti_fixture,
    write_velodyne_bin,
)
from sharingan.data.make3d import Make3DDataset, read_make3d_depth, write_make3d_fixture, write_make3d_mat
from sharingan.data.vkitti import (
    VirtualKittiDataset,
    depth_path_for,
    normalise_depth_cm,
    read_depth_png_cm,
    read_vkitti_list,
    write_depth_png_cm,
    write_vkitti_fixture,
)

SPLITS = Path(__file__).resolve().parents[2] / "sharingan" / "data" / "splits"  # shipped with the package


# ---------------------------------------------------------------------------------------------- vKITTI
def test_depth_png_round_trip_without_wraparound(tmp_path):
    depth = np.array([[0, 1, 32767], [32768, 40000, 65535]], dtype=np.float64)
    path = write_depth_png_cm(tmp_path / "d.png", depth)
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16  # a real 16-bit PNG on disk
    read = read_depth_png_cm(path)
    assert np.array_equal(read, depth.astype(np.float32))
    normalised = normalise_depth_cm(read)
    assert normalised[1, 2] == 1.0 and normalised[1, 1] == 1.0  # 655.35 m and 400 m capped at 80 m, not -1
    assert normalised[0, 0] == -1.0


def test_depth_reader_rejects_8bit_png(tmp_path):
    cv2.imwrite(str(tmp_path / "d.png"), np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError, match="16-bit"):
        read_depth_png_cm(tmp_path / "d.png")
    with pytest.raises(FileNotFoundError, match="missing.png"):
        read_depth_png_cm(tmp_path / "missing.png")


def test_depth_paths_of_both_layouts():
    assert depth_path_for("vkitti_1.3.1_rgb/0001/15-deg-left/00000.png") == \
        "vkitti_1.3.1_depthgt/0001/15-deg-left/00000.png"
    assert depth_path_for("vkitti_2.0.3_rgb/Scene01/clone/frames/rgb/Camera_0/rgb_00007.jpg") == \
        "vkitti_2.0.3_depth/Scene01/clone/frames/depth/Camera_0/depth_00007.png"
    with pytest.raises(ValueError, match="neither layout"):
        depth_path_for("images/0001.png")


@pytest.mark.parametrize("version", [1, 2])
def test_vkitti_fixture_reads_back(tmp_path, version):
    entries = write_vkitti_fixture(tmp_path, frames=2, size=(24, 80), version=version)
    assert len(entries) == 4
    dataset = VirtualKittiDataset(tmp_path, entries, size=(16, 32))
    sample = dataset[0]
    assert sample["image"].shape == (3, 16, 32) and sample["depth"].shape == (1, 16, 32)
    assert sample["image"].min() >= -1 and sample["image"].max() <= 1
    assert sample["depth"].min() >= -1 and sample["depth"].max() <= 1
    full = VirtualKittiDataset(tmp_path, entries, size=(24, 80))[0]["depth"][0]
    assert full[0, 0] == 1.0  # the planted 65535 sky pixel is the far cap, not negative
    row_cm = np.linspace(6000, 500, 24)[5]
    assert full[5, 10].item() == pytest.approx(row_cm / 8000 * 2 - 1, abs=1e-3)


def test_vkitti_augmentation_keeps_ranges(tmp_path):
    entries = write_vkitti_fixture(tmp_path, frames=1, size=(24, 80))
    torch.manual_seed(0)
    dataset = VirtualKittiDataset(tmp_path, entries, size=(16, 32), augment=True)
    for _ in range(4):
        sample = dataset[0]
        assert sample["depth"].min() >= -1 and sample["depth"].max() <= 1


def test_vkitti_missing_files_are_named(tmp_path):
    entries = write_vkitti_fixture(tmp_path, frames=1)
    (tmp_path / depth_path_for(entries[0])).unlink()
    with pytest.raises(FileNotFoundError, match="depthgt"):
        VirtualKittiDataset(tmp_path, entries)[0]
    with pytest.raises(FileNotFoundError, match="vKITTI root"):
        VirtualKittiDataset(tmp_path / "nope", entries)


def test_real_split_lists_parse():
    train = read_vkitti_list(SPLITS / "vkitti_sharingan" / "trainA_SYN_original.txt")
    test = read_vkitti_list(SPLITS / "vkitti_sharingan" / "testA_SYN_original.txt")
    assert (len(train), len(test)) == (21030, 230)
    assert not set(train) & set(test)
    assert all(depth_path_for(e).startswith("vkitti_1.3.1_depthgt/") for e in train[:50])
    assert len(read_kitti_list(SPLITS / "kitti_sharingan" / "test.txt")) == 697
    assert len(read_kitti_list(SPLITS / "kitti_sharingan" / "val.txt")) == 888
    eigen_test = read_kitti_list(SPLITS / "kitti_monodepth2" / "eigen_test_files.txt")
    assert eigen_test == read_kitti_list(SPLITS / "kitti_sharingan" / "test.txt")
    assert len(read_kitti_list(SPLITS / "kitti_monodepth2" / "eigen_full_train_files.txt")) == 22600


# ----------------------------------------------------------------------------------------------- KITTI
def test_calib_parsing_and_focal_baseline(tmp_path):
    write_calib_files(tmp_path, focal=700.0, baseline=0.5, image_size=(40, 120), left_offset=0.06)
    calib = read_calib_file(tmp_path / "calib_cam_to_cam.txt")
    assert calib["calib_time"] == "09-Jan-2012 13:57:47"  # three colons, split on the first only
    assert calib["P_rect_02"].shape == (12,)
    fb, width = focal_baseline(tmp_path)
    assert fb == pytest.approx(700.0 * 0.5) and width == 120


def test_calib_errors_name_the_file(tmp_path):
    (tmp_path / "calib_cam_to_cam.txt").write_text("P_rect_02 1 2 3\n")
    with pytest.raises(ValueError, match="calib_cam_to_cam.txt:1"):
        read_calib_file(tmp_path / "calib_cam_to_cam.txt")
    with pytest.raises(FileNotFoundError, match="calib_cam_to_cam.txt"):
        focal_baseline(tmp_path / "missing")


def test_velodyne_round_trip_and_size_check(tmp_path):
    points = np.array([[1.0, 2.0, 3.0, 0.5], [4.0, 5.0, 6.0, 0.25]])
    write_velodyne_bin(tmp_path / "a.bin", points)
    assert (tmp_path / "a.bin").stat().st_size == 2 * 16
    assert np.array_equal(load_velodyne_points(tmp_path / "a.bin"), points.astype(np.float32))
    (tmp_path / "bad.bin").write_bytes(b"\0" * 20)
    with pytest.raises(ValueError, match="bad.bin"):
        load_velodyne_points(tmp_path / "bad.bin")


def test_generate_depth_map_hand_projection(tmp_path):
    """Camera 2 with f = 100, c = (60, 20), velodyne->camera axes swap; points hand-projected."""
    write_calib_files(tmp_path, focal=100.0, cx=60.0, cy=20.0, baseline=0.5, image_size=(40, 120),
                      left_offset=0.0)
    points = np.array([
        [10.0, 0.0, 0.0, 1.0],    # on the optical axis: u = 60, v = 20 -> pixel (19, 59), depth 10 m
        [20.0, -4.0, 2.0, 1.0],   # cam (4, -2, 20): u = 60 + 20 = 80, v = 20 - 10 = 10 -> (9, 79), 20 m
        [5.0, 0.0, 0.0, 1.0],     # hits no pixel of the others
        [12.0, 0.0, 0.0, 1.0],    # same pixel as the first, farther: the nearest (10 m) wins
        [-5.0, 0.0, 0.0, 1.0],    # behind the scanner: dropped
    ])
    points[2, 1] = -5.0 * 0.3      # cam x = 1.5 at z = 5: u = 60 + 30 = 90 -> (19, 89), 5 m
    write_velodyne_bin(tmp_path / "scan.bin", points)
    depth = generate_depth_map(tmp_path, tmp_path / "scan.bin", cam=2)
    assert depth.shape == (40, 120)
    assert depth[19, 59] == pytest.approx(10.0)  # no -1 m offset
    assert depth[9, 79] == pytest.approx(20.0)
    assert depth[19, 89] == pytest.approx(5.0)
    assert np.count_nonzero(depth) == 3


def test_kitti_lists_both_formats(tmp_path):
    four = tmp_path / "four.txt"
    four.write_text("a/image_02/data/1.png a/image_03/data/1.png 2011_09_26 a/velodyne_points/data/1.bin\n")
    assert read_kitti_list(four) == [KittiEntry("a/image_02/data/1.png", "a/image_03/data/1.png", "2011_09_26",
                                                "a/velodyne_points/data/1.bin")]
    three = tmp_path / "three.txt"
    three.write_text("2011_09_26/2011_09_26_drive_0001_sync 473 l\n2011_09_26/2011_09_26_drive_0001_sync 473 r\n")
    entries = read_kitti_list(three)
    assert len(entries) == 1 and entries[0].left.endswith("image_02/data/0000000473.png")
    assert entries[0].calib_dir == "2011_09_26"
    bad = tmp_path / "bad.txt"
    bad.write_text("only two\n")
    with pytest.raises(ValueError, match="bad.txt:1"):
        read_kitti_list(bad)


def test_stereo_flip_swaps_and_mirrors():
    left = np.arange(12, dtype=np.uint8).reshape(1, 4, 3).repeat(2, 0)
    right = left + 100
    new_left, new_right = stereo_flip(left, right)
    assert np.array_equal(new_left, right[:, ::-1]) and np.array_equal(new_right, left[:, ::-1])


def test_colour_jitter_is_shared_by_both_views():
    image = np.random.default_rng(0).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    a, b = colour_jitter([image, image.copy()], np.random.default_rng(3))
    assert np.array_equal(a, b) and not np.array_equal(a, image)


def test_kitti_stereo_dataset_reads_fixture(tmp_path):
    entries = write_kitti_fixture(tmp_path, frames=2, image_size=(48, 160), missing_velodyne=(1,))
    assert not (tmp_path / entries[1].velodyne).exists()
    dataset = KittiStereoDataset(tmp_path, entries, size=(32, 64), augment=True)
    sample = dataset[0]
    assert sample["image"].shape == (3, 32, 64) and sample["right"].shape == (3, 32, 64)
    fb, width = focal_baseline(tmp_path / "2011_09_26")
    assert sample["focal_baseline"].item() == pytest.approx(fb * 64 / width, rel=1e-6)
    depth = generate_depth_map(tmp_path / "2011_09_26", tmp_path / entries[0].velodyne)
    assert depth.shape == (48, 160) and depth.max() < 60.0 and depth[depth > 0].min() >= 2.0
    with pytest.raises(FileNotFoundError, match="0000000001.bin"):
        generate_depth_map(tmp_path / "2011_09_26", tmp_path / entries[1].velodyne)


# ---------------------------------------------------------------------------------------------- Make3D
def test_make3d_mat_round_trip_and_crop(tmp_path):
    stems = write_make3d_fixture(tmp_path, image_hw=(32, 24))
    depth = read_make3d_depth(tmp_path / "Gridlaserdata" / f"depth_sph_corr-{stems[0]}.mat")
    assert depth.shape == (55, 305)
    assert depth[0, 0] == pytest.approx(2.0) and depth[-1, 0] == pytest.approx(80.0)
    dataset = Make3DDataset(tmp_path, size=(32, 64), resize_hw=(40, 36), crop_hw=(20, 32))
    sample = dataset[0]
    assert sample["image"].shape == (3, 32, 64) and sample["gt"].shape == (20, 32)
    # nearest resize of the row ramp 55 -> 40 rows, then centre rows 10..29: values come from the ramp
    assert set(np.unique(sample["gt"])) <= set(np.unique(depth))


def test_make3d_errors_name_files(tmp_path):
    write_make3d_mat(tmp_path / "x.mat", np.ones((3, 4)))
    import scipy.io
    scipy.io.savemat(str(tmp_path / "other.mat"), {"Depth": np.ones((2, 2))})
    with pytest.raises(KeyError, match="Position3DGrid"):
        read_make3d_depth(tmp_path / "other.mat")
    # a MATLAB v7.3 header (version 0x0200) is refused with a message naming the file
    header = b"MATLAB 7.3 MAT-file".ljust(116, b" ") + b"\0" * 8 + b"\x00\x02" + b"IM"
    (tmp_path / "v73.mat").write_bytes(header + b"\0" * 512)
    with pytest.raises(ValueError, match="v73.mat.*7.3"):
        read_make3d_depth(tmp_path / "v73.mat")
    (tmp_path / "Test134").mkdir()
    write_make3d_fixture(tmp_path / "m", stems=("a",))
    (tmp_path / "m" / "Gridlaserdata" / "depth_sph_corr-a.mat").unlink()
    with pytest.raises(FileNotFoundError, match="depth_sph_corr-a.mat"):
        Make3DDataset(tmp_path / "m")


def test_vkitti2_scan_finds_the_layout(tmp_path):
    from sharingan.data.vkitti import scan_vkitti2

    entries = write_vkitti_fixture(tmp_path, worlds=("0001", "0002"), frames=2, version=2)
    assert scan_vkitti2(tmp_path) == sorted(entries)
    with pytest.raises(FileNotFoundError, match="vKITTI 2"):
        scan_vkitti2(tmp_path / "empty")
