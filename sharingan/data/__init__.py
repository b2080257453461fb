"""Datasets of Chapter 2, each reader next to a writer of the same on-disk format.

Depth: vkitti (synthetic: Virtual KITTI 1.3.1 list layout and the vKITTI 2 layout), kitti (real: KITTI raw
stereo, calibration, velodyne -> depth), make3d (evaluation only), images (shared reading/augmentation);
all three in miniature for tests and smoke runs: `common.testing.write_depth_fixtures`.
Faces: sfsnet_synthetic, celeba, photoface, multipie.
"""
