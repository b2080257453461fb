"""Datasets of Chapter 2, each reader next to a writer of the same on-disk format.

Depth: vkitti (synthetic: Virtual KITTI 1.3.1 list layout and the vKITTI 2 layout), kitti (real: KITTI raw
stereo, calibration, velodyne -> depth), make3d (evaluation only), images (shared reading/augmentation),
depth_fixtures (all three written in miniature for tests and the CPU demo).
Faces: sfsnet_synthetic, celeba, photoface, multipie.
"""
