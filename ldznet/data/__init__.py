"""Chapter-3 datasets (PhraseCut, AIGI, RefCOCO family) and ``build_dataset`` from a config node.

Every dataset returns samples ``{"image": (3, H, W) float in [-1, 1], "mask": (1, H, W) float in {0, 1},
"prompt": str, "sample_index": int, "image_id": str}``. The layouts on disk are in docs/chapter3-data.md.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping

from omegaconf import DictConfig, OmegaConf

DATASET_NAMES = ("phrasecut", "aigi", "refcoco", "refcoco+", "refcocog")


def dataset_class(name: str):
    """The dataset class for a config ``name`` (imports stay lazy)."""
    if name == "phrasecut":
        from ldznet.data.phrasecut import PhraseCutDataset

        return PhraseCutDataset
    if name == "aigi":
        from ldznet.data.aigi import AIGIDataset

        return AIGIDataset
    if name in ("refcoco", "refcoco+", "refcocog"):
        from ldznet.data.refcoco import RefCOCODataset

        return RefCOCODataset
    raise ValueError(f"unknown dataset name {name!r}; valid: {DATASET_NAMES}")


def build_dataset(cfg: Mapping | DictConfig, **overrides):
    """Build a dataset from a node ``{name, root, split, image_size, <options of the class>}``.

    ``overrides`` replace node keys (e.g. ``limit=8``). Unknown keys raise an error listing the valid ones.
    """
    node = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    node.update({k: v for k, v in overrides.items() if v is not None})
    if "name" not in node or "root" not in node:
        raise ValueError(f"dataset config needs 'name' and 'root' keys, got {sorted(node)}")
    name = node.pop("name")
    cls = dataset_class(name)
    if name.startswith("refcoco"):
        node["dataset"] = name
    valid = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(node) - set(valid))
    if unknown:
        raise ValueError(f"dataset config for {name!r}: unknown keys {unknown}; valid: {valid}")
    return cls(**node)


def __getattr__(name: str):
    """`EpochStepSampler`, `NumberedSamples` (ldznet.data.sampling) on first use: importing the datasets stays light."""
    if name in ("EpochStepSampler", "NumberedSamples"):
        from ldznet.data import sampling

        return getattr(sampling, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
