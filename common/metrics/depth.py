"""Monocular depth errors (Tables 2.1, 2.2, 2.5, 2.6), protocol of SharinGAN/T2Net (docs/protocols.md §1).

KITTI Eigen: valid pixels are `min_depth < gt < max_depth` (min 1 m; cap 80 m or 50 m), inside the Garg crop;
the prediction is clamped to [min_depth, max_depth]; **no median scaling** (the metric scale comes from the
synthetic data). Errors are computed per image and averaged over images.

    abs_rel  = mean |g - p| / g          sq_rel   = mean (g - p)^2 / g
    rmse     = sqrt(mean (g - p)^2)      rmse_log = sqrt(mean (ln g - ln p)^2)
    a_k      = mean(max(g/p, p/g) < 1.25^k), k = 1, 2, 3

Make3D (Table 2.2, "C1"): valid `0 < gt < 70 m`, prediction clamped to (0, 70] and errors AbsRel, SqRel, RMSE
and RMSE of log10, per image, averaged.
"""

from __future__ import annotations

import numpy as np

from common.metrics._arrays import PerImageMean, as_bool, as_float64

GARG_ROWS = (0.40810811, 0.99189189)
GARG_COLUMNS = (0.03594771, 0.96405229)
MAKE3D_CAP = 70.0
MAKE3D_MIN_PREDICTION = 1e-3  # log10 of a zero prediction is undefined


def garg_crop_mask(height: int, width: int) -> np.ndarray:
    """Boolean (H, W) mask of the Garg et al. crop used for KITTI Eigen evaluation."""
    mask = np.zeros((height, width), dtype=bool)
    top, bottom = int(GARG_ROWS[0] * height), int(GARG_ROWS[1] * height)
    left, right = int(GARG_COLUMNS[0] * width), int(GARG_COLUMNS[1] * width)
    mask[top:bottom, left:right] = True
    return mask


def _check_shapes(pred: np.ndarray, gt: np.ndarray) -> None:
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground-truth shape {gt.shape}; "
                         "resize the prediction to the ground-truth size first")


def depth_errors(pred, gt, min_depth: float, max_depth: float, mask=None) -> dict[str, float]:
    """Errors of one image (metres). `mask` (e.g. `garg_crop_mask`) further restricts the valid pixels."""
    pred = np.squeeze(as_float64(pred, "prediction"))
    gt = np.squeeze(as_float64(gt, "ground truth"))
    _check_shapes(pred, gt)
    valid = (gt > min_depth) & (gt < max_depth)
    if mask is not None:
        mask = np.squeeze(as_bool(mask, "mask"))
        _check_shapes(mask, gt)
        valid &= mask
    if not valid.any():
        raise ValueError(f"no valid ground-truth pixel in ({min_depth}, {max_depth}) m for this image")
    g = gt[valid]
    p = np.clip(pred[valid], min_depth, max_depth)
    ratio = np.maximum(g / p, p / g)
    return {
        "abs_rel": float(np.mean(np.abs(g - p) / g)),
        "sq_rel": float(np.mean((g - p) ** 2 / g)),
        "rmse": float(np.sqrt(np.mean((g - p) ** 2))),
        "rmse_log": float(np.sqrt(np.mean((np.log(g) - np.log(p)) ** 2))),
        "a1": float(np.mean(ratio < 1.25)),
        "a2": float(np.mean(ratio < 1.25**2)),
        "a3": float(np.mean(ratio < 1.25**3)),
    }


def make3d_errors(pred, gt, max_depth: float = MAKE3D_CAP) -> dict[str, float]:
    """Make3D C1 errors of one image: pixels with 0 < gt < 70 m; log errors in base 10."""
    pred = np.squeeze(as_float64(pred, "prediction"))
    gt = np.squeeze(as_float64(gt, "ground truth"))
    _check_shapes(pred, gt)
    valid = (gt > 0) & (gt < max_depth)
    if not valid.any():
        raise ValueError(f"no valid Make3D ground-truth pixel in (0, {max_depth}) m for this image")
    g = gt[valid]
    p = np.clip(pred[valid], MAKE3D_MIN_PREDICTION, max_depth)
    return {
        "abs_rel": float(np.mean(np.abs(g - p) / g)),
        "sq_rel": float(np.mean((g - p) ** 2 / g)),
        "rmse": float(np.sqrt(np.mean((g - p) ** 2))),
        "rmse_log10": float(np.sqrt(np.mean((np.log10(g) - np.log10(p)) ** 2))),
    }


class DepthErrorAggregator:
    """Per-image errors averaged over a dataset, for one protocol.

    protocol="kitti": `depth_errors` with (min_depth, max_depth) and the Garg crop when `garg_crop`;
    protocol="make3d": `make3d_errors` with cap `max_depth` (70 m).
    """

    def __init__(self, protocol: str = "kitti", min_depth: float = 1.0, max_depth: float = 80.0,
                 garg_crop: bool = True) -> None:
        if protocol not in ("kitti", "make3d"):
            raise ValueError(f"unknown depth protocol {protocol!r} (kitti or make3d)")
        self.protocol, self.min_depth, self.max_depth, self.garg_crop = protocol, min_depth, max_depth, garg_crop
        self._mean = PerImageMean()

    def add(self, pred, gt) -> dict[str, float]:
        if self.protocol == "make3d":
            errors = make3d_errors(pred, gt, self.max_depth)
        else:
            gt = np.squeeze(as_float64(gt, "ground truth"))
            mask = garg_crop_mask(*gt.shape) if self.garg_crop else None
            errors = depth_errors(pred, gt, self.min_depth, self.max_depth, mask)
        self._mean.add(errors)
        return errors

    @property
    def count(self) -> int:
        return self._mean.count

    def compute(self) -> dict[str, float]:
        return {**self._mean.compute(), "image_count": self.count}

    def protocol_block(self) -> dict:
        if self.protocol == "make3d":
            return {"protocol": "make3d_c1", "valid": f"0 < gt < {self.max_depth} m",
                    "prediction_clamp": [MAKE3D_MIN_PREDICTION, self.max_depth], "median_scaling": False,
                    "image_count": self.count}
        return {"protocol": "kitti_eigen", "crop": "garg" if self.garg_crop else None,
                "valid": f"{self.min_depth} < gt < {self.max_depth} m", "cap": self.max_depth,
                "prediction_clamp": [self.min_depth, self.max_depth], "median_scaling": False,
                "image_count": self.count}
