"""Text-based segmentation metrics (Tables 3.1-3.4), CLIPSeg's fixed-interval protocol (docs/protocols.md §5).

One sweep over 49 thresholds t in {0.02, 0.04, ..., 0.98} (`numpy.linspace(0, 1, 51)[1:-1]`), a pixel being
foreground when its probability is strictly greater than t. For each threshold:

- IoU_FG(t) = sum tp / (1 + sum tp + sum fp + sum fn), sums over all pixels of all samples (cumulative IoU);
- mIoU(t)   = mean over samples of tp_i / (1 + tp_i + fp_i + fn_i) (each phrase is its own "class" in
  CLIPSeg's PhraseCut evaluation, so this is the mean of per-sample IoU; an empty mask predicted empty scores 0);
- AP: precision(t) = sum tp / (1 + sum tp + sum fp), recall(t) = sum tp / (1 + sum tp + sum fn), kept where
  sum tp + sum fp > 0, duplicate (recall, precision) pairs removed, sorted by recall and integrated with
  Simpson's rule (`scipy.integrate.simpson`; CLIPSeg used the older `simps`, so AP may differ slightly).
  On very uneven recall spacing (a near-constant predictor) Simpson's parabolas can overshoot below 0 or
  above 1; such a curve is integrated with the trapezoid rule instead (`integrate_precision_recall`).

"best" = the maximum over thresholds; "@0.3" = the value at t = 0.3 (CLIPSeg's own rows in Table 3.1 use
t = 0.3). All numbers are returned in percent, as the dissertation's tables print them.
"""

from __future__ import annotations

import numpy as np
from scipy.integrate import simpson, trapezoid

from common.metrics._arrays import as_bool, as_float64

THRESHOLDS = np.linspace(0.0, 1.0, 51)[1:-1]
REPORTED_THRESHOLDS = (0.1, 0.2, 0.3, 0.5)


def _threshold_index(value: float) -> int:
    index = int(np.argmin(np.abs(THRESHOLDS - value)))
    if abs(THRESHOLDS[index] - value) > 1e-9:
        raise ValueError(f"threshold {value} is not on the 0.02 grid")
    return index


def integrate_precision_recall(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under precision(recall): Simpson's rule as CLIPSeg, trapezoids when Simpson leaves [0, 1]."""
    area = float(simpson(precision, x=recall))
    if not 0.0 <= area <= 1.0:
        area = float(trapezoid(precision, x=recall))
    return area


class ThresholdSweepMetrics:
    """Accumulate per-sample counts at every threshold; `.compute()` gives best, @t and AP numbers."""

    def __init__(self) -> None:
        self.true_positive = np.zeros(len(THRESHOLDS), dtype=np.int64)
        self.false_positive = np.zeros(len(THRESHOLDS), dtype=np.int64)
        self.false_negative = np.zeros(len(THRESHOLDS), dtype=np.int64)
        self.per_sample_iou: list[np.ndarray] = []

    def add(self, probabilities, gt_mask) -> None:
        """One sample: foreground probabilities in [0, 1] and the binary ground truth, same shape."""
        probabilities = np.squeeze(as_float64(probabilities, "probabilities"))
        gt = np.squeeze(as_bool(gt_mask, "ground-truth mask"))
        if probabilities.shape != gt.shape:
            raise ValueError(f"probabilities {probabilities.shape} and ground truth {gt.shape} differ in shape; "
                             "resize the prediction to the ground-truth size first")
        if not np.isfinite(probabilities).all():
            raise ValueError("probabilities contain NaN or infinite values")
        if probabilities.min() < 0.0 or probabilities.max() > 1.0:
            raise ValueError("probabilities must lie in [0, 1] (apply a sigmoid to logits first)")
        # bucket[k] = number of thresholds strictly below p, so p > THRESHOLDS[j] exactly when j < bucket.
        bucket = np.searchsorted(THRESHOLDS, probabilities.ravel(), side="left")
        positives = np.bincount(bucket[gt.ravel()], minlength=len(THRESHOLDS) + 1)
        negatives = np.bincount(bucket[~gt.ravel()], minlength=len(THRESHOLDS) + 1)
        # predicted-foreground count at threshold j = pixels whose bucket > j.
        tp = np.cumsum(positives[::-1])[::-1][1:]
        fp = np.cumsum(negatives[::-1])[::-1][1:]
        fn = int(gt.sum()) - tp
        self.true_positive += tp
        self.false_positive += fp
        self.false_negative += fn
        self.per_sample_iou.append(tp / (1.0 + tp + fp + fn))

    @property
    def count(self) -> int:
        return len(self.per_sample_iou)

    def curves(self) -> dict[str, np.ndarray]:
        tp, fp, fn = (self.true_positive.astype(np.float64), self.false_positive.astype(np.float64),
                      self.false_negative.astype(np.float64))
        return {
            "thresholds": THRESHOLDS,
            "fgiou": tp / (1.0 + tp + fp + fn),
            "miou": np.mean(np.stack(self.per_sample_iou), axis=0),
            "precision": tp / (1.0 + tp + fp),
            "recall": tp / (1.0 + tp + fn),
        }

    def average_precision(self) -> float:
        curves = self.curves()
        keep = (self.true_positive + self.false_positive) > 0
        pairs = sorted(set(zip(curves["recall"][keep].tolist(), curves["precision"][keep].tolist())))
        if len(pairs) < 2:
            return 0.0
        recall, precision = np.array(pairs).T
        return integrate_precision_recall(recall, precision)

    def compute(self) -> dict[str, float]:
        if not self.per_sample_iou:
            raise ValueError("no sample was added to ThresholdSweepMetrics")
        curves = self.curves()
        best_miou, best_fgiou = int(np.argmax(curves["miou"])), int(np.argmax(curves["fgiou"]))
        result = {
            "miou_best": 100.0 * float(curves["miou"][best_miou]),
            "fgiou_best": 100.0 * float(curves["fgiou"][best_fgiou]),
            "ap": 100.0 * self.average_precision(),
            "miou_best_threshold": float(THRESHOLDS[best_miou]),
            "fgiou_best_threshold": float(THRESHOLDS[best_fgiou]),
        }
        for threshold in REPORTED_THRESHOLDS:
            index = _threshold_index(threshold)
            result[f"miou_{threshold}"] = 100.0 * float(curves["miou"][index])
            result[f"fgiou_{threshold}"] = 100.0 * float(curves["fgiou"][index])
        result["sample_count"] = self.count
        return result
