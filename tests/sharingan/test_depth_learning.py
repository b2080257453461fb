"""Does the depth machinery learn? Self-supervised stereo: T trained with the real-domain loss alone
(geometric consistency + smoothness, eq. 2.8) on a pair with a known constant disparity must find the
depth f·B / d. This checks the warp direction, the disparity scaling per scale and the loss together."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sharingan.losses import DepthTaskLoss, depth_from_network
from sharingan.models.depth_network import DepthUNet


@pytest.mark.slow
def test_geometric_consistency_recovers_the_true_depth():
    torch.manual_seed(0)
    height, width, disparity = 32, 64, 3
    texture = F.avg_pool2d(torch.rand(2, 3, height, width + 8), 3, 1, 1)
    right = texture[..., 4:4 + width]
    left = texture[..., 4 - disparity:4 - disparity + width]  # left(x) = right(x - d)
    true_depth = 20.0
    batch = {"image": left * 2 - 1, "right": right * 2 - 1,
             "focal_baseline": torch.full((2,), true_depth * disparity)}
    network = DepthUNet(width=0.0625)
    loss = DepthTaskLoss()
    optimizer = torch.optim.Adam(network.parameters(), 1e-3)

    def median_depth() -> float:
        network.eval()
        with torch.no_grad():
            depth = depth_from_network(network(batch["image"])[-1])
        network.train()
        return depth[..., 8:].median().item()  # columns that see the right image

    start = median_depth()
    for _ in range(80):
        value, _ = loss.real(network(batch["image"]), batch)
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
    assert abs(start - true_depth) > 5.0
    assert median_depth() == pytest.approx(true_depth, abs=2.0)
