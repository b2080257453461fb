"""Procedural worlds of the miniature, written in the real on-disk formats by the chapters' writers.

- `street`: depth (Chapter 2, §2.3.1): Virtual KITTI, KITTI raw (stereo + calib + Velodyne), Make3D.
- `faces`: face normals (Chapter 2, §2.3.2): SfSNet synthetic, CelebA, Photoface, Multi-PIE.
- `shapes`: text-based segmentation (Chapter 3): PhraseCut, AIGI, RefCOCO / RefCOCO+ / G-Ref.
Each module has a `write_<world>_fixture(root, n, size)` for tests elsewhere.
"""
