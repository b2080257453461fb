"""CLIPSeg threshold-sweep metrics: hand-worked numbers and a brute-force second implementation."""

import numpy as np
import pytest
from scipy.integrate import simpson

from common.metrics.segmentation import THRESHOLDS, ThresholdSweepMetrics, integrate_precision_recall


def test_grid_is_49_thresholds_from_002_to_098():
    assert len(THRESHOLDS) == 49
    assert THRESHOLDS[0] == pytest.approx(0.02) and THRESHOLDS[-1] == pytest.approx(0.98)


def test_single_sample_by_hand_at_03():
    metrics = ThresholdSweepMetrics()
    metrics.add(np.array([0.9, 0.25, 0.5, 0.1]), np.array([1, 1, 0, 0]))
    result = metrics.compute()
    # t = 0.3: predicted {0, 2} -> tp 1, fp 1, fn 1 -> 1 / (1 + 1 + 1 + 1)
    assert result["fgiou_0.3"] == pytest.approx(25.0)
    assert result["miou_0.3"] == pytest.approx(25.0)
    # t in [0.5, 0.9) predicts {0}: tp 1, fp 0, fn 1 -> 1/3; t in [0.1, 0.25) predicts {0, 1, 2}:
    # tp 2, fp 1, fn 0 -> 2/4, the best.
    assert result["fgiou_0.5"] == pytest.approx(100 / 3)
    assert result["fgiou_best"] == pytest.approx(50.0)
    assert result["fgiou_best_threshold"] == pytest.approx(0.1)


def test_perfect_prediction_is_near_100_with_clipseg_smoothing():
    gt = np.zeros((100, 100), dtype=bool)
    gt[:50] = True
    metrics = ThresholdSweepMetrics()
    metrics.add(gt.astype(float), gt)
    result = metrics.compute()
    assert result["fgiou_best"] == pytest.approx(100 * 5000 / 5001)
    assert result["miou_0.3"] == pytest.approx(100 * 5000 / 5001)


def _brute_force(samples):
    tp = np.zeros(49)
    fp = np.zeros(49)
    fn = np.zeros(49)
    per_sample = []
    for probabilities, gt in samples:
        iou = []
        for j, threshold in enumerate(THRESHOLDS):
            predicted = probabilities > threshold
            a, b, c = np.sum(predicted & gt), np.sum(predicted & ~gt), np.sum(~predicted & gt)
            tp[j] += a
            fp[j] += b
            fn[j] += c
            iou.append(a / (1 + a + b + c))
        per_sample.append(iou)
    fgiou = tp / (1 + tp + fp + fn)
    miou = np.mean(per_sample, axis=0)
    keep = tp + fp > 0
    pairs = sorted(set(zip((tp / (1 + tp + fn))[keep], (tp / (1 + tp + fp))[keep])))
    recall, precision = np.array(pairs).T
    return fgiou, miou, simpson(precision, x=recall)


def test_matches_brute_force_on_random_samples():
    rng = np.random.default_rng(3)
    samples = []
    metrics = ThresholdSweepMetrics()
    for _ in range(5):
        gt = rng.random((12, 10)) < rng.uniform(0.1, 0.6)
        probabilities = np.clip(gt * 0.5 + rng.random(gt.shape) * 0.6, 0, 1)
        samples.append((probabilities, gt))
        metrics.add(probabilities, gt)
    fgiou, miou, ap = _brute_force(samples)
    result = metrics.compute()
    assert result["fgiou_best"] == pytest.approx(100 * fgiou.max())
    assert result["miou_best"] == pytest.approx(100 * miou.max())
    assert result["miou_0.3"] == pytest.approx(100 * miou[14])
    assert result["ap"] == pytest.approx(100 * ap)
    assert result["sample_count"] == 5


def test_bad_inputs():
    metrics = ThresholdSweepMetrics()
    with pytest.raises(ValueError, match="shape"):
        metrics.add(np.zeros((2, 2)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="sigmoid"):
        metrics.add(np.full((2, 2), 3.0), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="NaN"):
        metrics.add(np.full((2, 2), np.nan), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="no sample"):
        metrics.compute()


def test_uneven_recall_spacing_falls_back_to_trapezoids_instead_of_a_negative_area():
    recall, precision = np.array([0.0, 0.01, 1.0]), np.array([1.0, 0.0, 1.0])
    assert simpson(precision, x=recall) < 0  # Simpson's parabola overshoots on this spacing
    assert integrate_precision_recall(recall, precision) == pytest.approx(0.5 * 0.01 + 0.5 * 0.99)
    evenly = np.linspace(0, 1, 5)
    assert integrate_precision_recall(evenly, evenly**2) == pytest.approx(1 / 3)  # Simpson is exact here
