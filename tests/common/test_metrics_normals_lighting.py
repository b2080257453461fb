"""Normal and lighting metrics against hand-worked values (sharingan.md §4.2, Table 2.4)."""

import numpy as np
import pytest
import torch

from common.metrics.lighting import topk_accuracy
from common.metrics.normals import PhotofaceAggregator, normal_errors


def _normals(vectors):
    """(N,3) list -> (1,3,1,N) tensor."""
    return torch.tensor(vectors, dtype=torch.float64).T.reshape(1, 3, 1, -1)


def test_axis_aligned_angles():
    pred = _normals([[0, 0, 1], [0, 0, 1], [0, 0, 1]])
    gt = _normals([[0, 0, 1], [0, 1, 0], [0, np.sin(np.radians(22)), np.cos(np.radians(22))]])
    errors = normal_errors(pred, gt, torch.ones(1, 1, 1, 3))
    assert errors["mae_deg"] == pytest.approx((0 + 90 + 22) / 3)
    assert errors["lt20"] == pytest.approx(100 / 3)
    assert errors["lt25"] == pytest.approx(200 / 3)
    assert errors["lt30"] == pytest.approx(200 / 3)


def test_identity_is_perfect_and_mask_excludes_pixels():
    rng = np.random.default_rng(1)
    normals = rng.normal(size=(2, 3, 4, 5))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    errors = normal_errors(normals, normals, np.ones((2, 1, 4, 5)))
    assert errors["mae_deg"] == pytest.approx(0.0, abs=1e-5)
    assert errors["lt20"] == errors["lt25"] == errors["lt30"] == 100.0
    pred = _normals([[0, 0, 1], [0, 0, 1]])
    gt = _normals([[0, 0, 1], [1, 0, 0]])
    assert normal_errors(pred, gt, torch.tensor([[[[1.0, 0.0]]]]))["mae_deg"] == pytest.approx(0.0)


def test_photoface_aggregator_batch_means_and_pooled_thresholds():
    aggregator = PhotofaceAggregator()
    aggregator.add(_normals([[0, 0, 1], [0, 0, 1]]), _normals([[0, 0, 1], [0, 1, 0]]), torch.ones(1, 1, 1, 2))
    ten = np.radians(10)
    aggregator.add(_normals([[0, 0, 1]]), _normals([[0, np.sin(ten), np.cos(ten)]]), torch.ones(1, 1, 1, 1))
    result = aggregator.compute()
    assert result["mae_deg"] == pytest.approx((45 + 10) / 2)  # mean of batch means, not of 3 pixels (33.3)
    assert result["lt20"] == pytest.approx(200 / 3)  # pooled: 2 of 3 pixels
    assert result["image_count"] == 2


def test_topk_accuracy_by_hand():
    scores = np.array([[0.1, 0.5, 0.4], [0.9, 0.05, 0.05], [0.2, 0.3, 0.5]])
    labels = np.array([2, 0, 0])
    assert topk_accuracy(scores, labels, 1) == pytest.approx(100 / 3)
    assert topk_accuracy(scores, labels, 2) == pytest.approx(200 / 3)
    assert topk_accuracy(scores, labels, 3) == pytest.approx(100.0)
    assert topk_accuracy(torch.eye(4), torch.arange(4), 1) == 100.0
    with pytest.raises(ValueError, match="k = 4"):
        topk_accuracy(scores, labels, 4)
