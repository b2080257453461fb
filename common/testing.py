"""Small data and model writers for tests, benchmarks and CPU smoke runs (never used by training itself).

- `write_depth_fixtures(root)`: a complete miniature of the depth data (vKITTI 1.3.1, KITTI raw, Make3D) in the
  real on-disk formats, plus list files; returns the config overrides that point the depth experiments at it
  (the tests, `benchmarks.gpu_check` and the smoke pipeline `experiments/chapter2/depth_tiny.yaml` use it).
- `write_tiny_stable_diffusion(folder)`: random tiny Stable Diffusion components (`ldznet.tiny_configs`) saved in
  the diffusers folder layout, so tests and `experiments/chapter3/tiny.yaml` go through the real SD loader.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ldznet.stable_diffusion import build_random_components, save_diffusers_folder
from ldznet.tiny_configs import tiny_architecture, write_tiny_tokenizer
from sharingan.data.kitti import write_kitti_fixture, write_kitti_list
from sharingan.data.make3d import write_make3d_fixture
from sharingan.data.vkitti import write_vkitti_fixture, write_vkitti_list


def write_depth_fixtures(root: str | Path, image_size: tuple[int, int] = (48, 160), frames: int = 3) -> list[str]:
    """vKITTI, KITTI raw and Make3D in miniature under `root`; returns the `data.*` overrides that point at them."""
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


def write_tiny_stable_diffusion(folder: str | Path, seed: int = 0) -> Path:
    """Random tiny SD components saved in the diffusers folder layout; returns `folder`."""
    torch.manual_seed(seed)
    components = build_random_components(tiny_architecture())
    write_tiny_tokenizer(Path(folder) / "tokenizer")
    return save_diffusers_folder(components, folder, write_tokenizer=False)
