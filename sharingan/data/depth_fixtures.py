"""A complete miniature of the depth data (vKITTI 1.3.1, KITTI raw, Make3D) in the real on-disk formats.

`write_depth_fixtures(root)` writes all three datasets plus their list files under `root` and returns the
config overrides that point the depth experiments at them; the tests and the smoke pipeline use it, and
it shows the miniature-world generator which writers to call.
"""

from __future__ import annotations

from pathlib import Path

from sharingan.data.kitti import write_kitti_fixture, write_kitti_list
from sharingan.data.make3d import write_make3d_fixture
from sharingan.data.vkitti import write_vkitti_fixture, write_vkitti_list


def write_depth_fixtures(root: str | Path, image_size: tuple[int, int] = (48, 160), frames: int = 3) -> list[str]:
    root = Path(root)
    vkitti_entries = write_vkitti_fixture(root / "vkitti", frames=frames, size=(image_size[0] // 2, image_size[1] // 2))
    vkitti_list = write_vkitti_list(root / "lists" / "vkitti_train.txt", vkitti_entries)
    kitti_entries = write_kitti_fixture(root / "kitti", frames=frames, image_size=image_size)
    train_list = write_kitti_list(root / "lists" / "kitti_train.txt", kitti_entries)
    test_list = write_kitti_list(root / "lists" / "kitti_test.txt", kitti_entries[:2])
    write_make3d_fixture(root / "make3d")
    return [
        f"data.vkitti.root={root / 'vkitti'}", f"data.vkitti.train_lists=[{vkitti_list}]",
        f"data.kitti.root={root / 'kitti'}", f"data.kitti.train_list={train_list}",
        f"data.kitti.val_list={test_list}", f"data.kitti.test_list={test_list}",
        f"data.make3d.root={root / 'make3d'}",
    ]
