"""Depth metrics against values worked out by hand (docs/protocols.md §1)."""

import math

import numpy as np
import pytest
import torch

from common.metrics.depth import DepthErrorAggregator, depth_errors, garg_crop_mask, make3d_errors


def test_hand_worked_example():
    # ratios g/p: 1, 5/4, 10/8, 1 -> both off pixels are exactly 1.25 away.
    pred = np.array([[2.0, 4.0], [8.0, 10.0]])
    gt = np.array([[2.0, 5.0], [10.0, 10.0]])
    errors = depth_errors(pred, gt, min_depth=1.0, max_depth=80.0)
    assert errors["abs_rel"] == pytest.approx((0 + 1 / 5 + 2 / 10 + 0) / 4)
    assert errors["sq_rel"] == pytest.approx((0 + 1 / 5 + 4 / 10 + 0) / 4)
    assert errors["rmse"] == pytest.approx(math.sqrt(5 / 4))
    assert errors["rmse_log"] == pytest.approx(math.log(1.25) * math.sqrt(0.5))
    assert errors["a1"] == pytest.approx(0.5)  # 1.25 is not < 1.25
    assert errors["a2"] == pytest.approx(1.0)
    assert errors["a3"] == pytest.approx(1.0)


def test_identity_gives_zero_error_and_full_accuracy_numpy_and_torch():
    gt = np.random.default_rng(0).uniform(2, 70, size=(6, 9))
    for pred, target in ((gt, gt), (torch.from_numpy(gt), torch.from_numpy(gt))):
        errors = depth_errors(pred, target, 1.0, 80.0)
        assert errors["abs_rel"] == 0 and errors["rmse"] == 0 and errors["rmse_log"] == 0
        assert errors["a1"] == errors["a2"] == errors["a3"] == 1.0


def test_valid_range_and_prediction_clamp():
    gt = np.array([90.0, 0.5, 40.0])  # 90 m is beyond the cap, 0.5 m below min: only 40 m counts
    pred = np.array([1.0, 1.0, 100.0])  # clamped to 80
    errors = depth_errors(pred, gt, 1.0, 80.0)
    assert errors["abs_rel"] == pytest.approx(40.0 / 40.0)
    assert errors["rmse"] == pytest.approx(40.0)


def test_garg_crop_bounds_kitti_size():
    mask = garg_crop_mask(375, 1242)
    rows, columns = np.nonzero(mask)
    assert (rows.min(), rows.max() + 1) == (153, 371)
    assert (columns.min(), columns.max() + 1) == (44, 1197)
    assert mask.sum() == 218 * 1153


def test_make3d_log10_and_cap():
    gt = np.array([100.0, 50.0, 0.0])  # 100 m excluded (C1 < 70 m), 0 excluded
    pred = np.array([1.0, 5.0, 3.0])
    errors = make3d_errors(pred, gt)
    assert errors["rmse_log10"] == pytest.approx(1.0)
    assert errors["abs_rel"] == pytest.approx(45 / 50)
    assert set(errors) == {"abs_rel", "sq_rel", "rmse", "rmse_log10"}


def test_aggregator_averages_per_image_not_per_pixel():
    aggregator = DepthErrorAggregator(min_depth=1.0, max_depth=80.0, garg_crop=False)
    aggregator.add(np.full((2, 2), 10.0), np.full((2, 2), 10.0))  # abs_rel 0
    aggregator.add(np.array([[20.0]]), np.array([[10.0]]))  # abs_rel 1
    result = aggregator.compute()
    assert result["abs_rel"] == pytest.approx(0.5)
    assert result["image_count"] == 2
    assert aggregator.protocol_block()["median_scaling"] is False


def test_shape_mismatch_and_empty_valid_set_raise():
    with pytest.raises(ValueError, match="shape"):
        depth_errors(np.ones((2, 2)), np.ones((3, 2)), 1, 80)
    with pytest.raises(ValueError, match="no valid"):
        depth_errors(np.ones((2, 2)), np.zeros((2, 2)), 1, 80)
