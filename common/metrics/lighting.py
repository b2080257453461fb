"""Lighting classification accuracy (Table 2.4, MultiPIE): top-k accuracy in percent."""

from __future__ import annotations

import numpy as np

from common.metrics._arrays import as_float64


def topk_accuracy(scores, labels, k: int) -> float:
    """Percentage of samples whose true class is among the k highest scores.

    scores: (N, C) class scores (higher = more likely); labels: (N,) integer classes in [0, C).
    Ties are broken by class index (stable sort), so the result does not depend on chance.
    """
    scores = as_float64(scores, "scores")
    labels = np.asarray(labels.detach().cpu() if hasattr(labels, "detach") else labels).astype(np.int64).ravel()
    if scores.ndim != 2 or scores.shape[0] != labels.shape[0]:
        raise ValueError(f"scores must be (N, C) with N = len(labels); got {scores.shape} and {labels.shape}")
    if not 1 <= k <= scores.shape[1]:
        raise ValueError(f"k = {k} must be between 1 and the number of classes {scores.shape[1]}")
    if labels.min() < 0 or labels.max() >= scores.shape[1]:
        raise ValueError(f"labels must lie in [0, {scores.shape[1]}); got range [{labels.min()}, {labels.max()}]")
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    hits = (order == labels[:, None]).any(axis=1)
    return float(100.0 * hits.mean())
