"""Accept numpy arrays or torch tensors alike; compute in float64 numpy."""

from __future__ import annotations

import numpy as np
import torch


def as_float64(array, name: str) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().double().numpy()
    array = np.asarray(array, dtype=np.float64)
    if array.size == 0:
        raise ValueError(f"{name} is empty")
    return array


def as_bool(array, name: str) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    array = np.asarray(array)
    return array > 0.5 if array.dtype != bool else array


class PerImageMean:
    """Average dicts of per-image numbers over a dataset (the KITTI and Make3D protocols average per image)."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.count = 0

    def add(self, values: dict[str, float]) -> None:
        if self.count and set(values) != set(self.sums):
            raise ValueError(f"metric keys changed: {sorted(values)} vs {sorted(self.sums)}")
        for key, value in values.items():
            self.sums[key] = self.sums.get(key, 0.0) + float(value)
        self.count += 1

    def compute(self) -> dict[str, float]:
        if self.count == 0:
            raise ValueError("no image was added to the aggregator")
        return {key: total / self.count for key, total in self.sums.items()}
