"""Surface-normal errors (Table 2.3), Photoface protocol of SharinGAN (docs/protocols.md §3).

Per pixel, the angular error is acos(clamp(<n_pred, n_gt>, -1, 1)) in degrees, both normals re-normalised.
Over a dataset (`PhotofaceAggregator`): MAE is the mean over batches of each batch's masked-pixel mean (as
the official script does; not a global pixel mean), and the <20°, <25°, <30° numbers are percentages of all
valid pixels pooled over the whole set.
"""

from __future__ import annotations

import numpy as np

from common.metrics._arrays import as_bool, as_float64

THRESHOLDS_DEG = (20.0, 25.0, 30.0)


def angular_errors_deg(pred, gt, mask) -> np.ndarray:
    """Angular errors in degrees of the valid pixels of a batch (B,3,H,W) / (B,1,H,W) mask -> 1-D array."""
    pred = as_float64(pred, "predicted normals")
    gt = as_float64(gt, "ground-truth normals")
    if pred.ndim == 3:
        pred, gt = pred[None], gt[None]
    if pred.shape != gt.shape or pred.ndim != 4 or pred.shape[1] != 3:
        raise ValueError(f"normals must both be (B,3,H,W); got {pred.shape} and {gt.shape}")
    mask = as_bool(mask, "mask")
    if mask.ndim == 2:
        mask = mask[None, None]
    elif mask.ndim == 3:
        mask = mask[:, None] if mask.shape[0] == pred.shape[0] and mask.shape[1:] == pred.shape[2:] else mask[None]
    if mask.shape[0] != pred.shape[0] or mask.shape[-2:] != pred.shape[-2:]:
        raise ValueError(f"mask shape {mask.shape} does not match normals {pred.shape}")
    pred = pred / np.maximum(np.linalg.norm(pred, axis=1, keepdims=True), 1e-12)
    gt = gt / np.maximum(np.linalg.norm(gt, axis=1, keepdims=True), 1e-12)
    cosine = np.clip(np.sum(pred * gt, axis=1), -1.0, 1.0)
    valid = mask[:, 0]
    return np.degrees(np.arccos(cosine[valid]))


def normal_errors(pred, gt, mask) -> dict[str, float]:
    """MAE in degrees and the percentage of pixels under 20, 25 and 30 degrees, over one batch."""
    errors = angular_errors_deg(pred, gt, mask)
    if errors.size == 0:
        raise ValueError("the mask selects no pixel")
    result = {"mae_deg": float(errors.mean())}
    for threshold in THRESHOLDS_DEG:
        result[f"lt{int(threshold)}"] = float(100.0 * np.mean(errors < threshold))
    return result


class PhotofaceAggregator:
    """Dataset numbers following the official Photoface script (batch means for MAE, pooled thresholds)."""

    def __init__(self) -> None:
        self.batch_means: list[float] = []
        self.pixel_count = 0
        self.under = {threshold: 0 for threshold in THRESHOLDS_DEG}
        self.image_count = 0

    def add(self, pred, gt, mask) -> None:
        errors = angular_errors_deg(pred, gt, mask)
        if errors.size == 0:
            return
        self.batch_means.append(float(errors.mean()))
        self.pixel_count += errors.size
        self.image_count += int(pred.shape[0]) if len(pred.shape) == 4 else 1
        for threshold in THRESHOLDS_DEG:
            self.under[threshold] += int(np.sum(errors < threshold))

    def compute(self) -> dict[str, float]:
        if not self.batch_means:
            raise ValueError("no valid pixel was added to the Photoface aggregator")
        result = {"mae_deg": float(np.mean(self.batch_means))}
        for threshold in THRESHOLDS_DEG:
            result[f"lt{int(threshold)}"] = 100.0 * self.under[threshold] / self.pixel_count
        result["image_count"] = self.image_count
        return result
