"""The Chapter 3 defaults, read from the one place that holds them: experiments/chapter3/base.yaml (issue 14).

`ldznet.models.model_options`, `ldznet.lit_module.training_plan` and `SegmenterLitModule` have no defaults in
code: every key of the `model` / `optim` node is required. Callers that build a segmenter outside an experiment
config (tests, benchmarks, `ldznet.summary`, the official-checkpoint import) take the base file's nodes here and
change what they need:

    model_defaults(variant="znet", image_size=64, gradient_checkpointing=False)
    optim_defaults(ema=False)
"""

from __future__ import annotations

import functools
from typing import Any

from omegaconf import DictConfig, OmegaConf

from common.config import EXPERIMENTS_ROOT, load_config

BASE_CONFIG = EXPERIMENTS_ROOT / "chapter3" / "base.yaml"


@functools.lru_cache(maxsize=1)
def _base() -> DictConfig:
    return load_config(BASE_CONFIG)


def _node(name: str, overrides: dict[str, Any]) -> dict[str, Any]:
    node = OmegaConf.to_container(_base()[name], resolve=True)
    unknown = sorted(set(overrides) - set(node))
    if unknown:
        raise KeyError(f"{name} option(s) {unknown} are not in {BASE_CONFIG}; valid: {sorted(node)}")
    merged = OmegaConf.merge(OmegaConf.create(node), OmegaConf.create(overrides))
    return OmegaConf.to_container(merged, resolve=True)


def model_defaults(**overrides: Any) -> dict[str, Any]:
    """The `model` node of base.yaml with `overrides` on top (nested nodes merge, e.g. `ldm={"eval_timestep": 200}`).

    `variant` is `???` there, so it must be given; the `stable_diffusion` node is left out (these callers pass
    ready components) unless an override sets it."""
    options = _node("model", overrides)
    if "stable_diffusion" not in overrides:
        options.pop("stable_diffusion", None)
    return options


def optim_defaults(**overrides: Any) -> dict[str, Any]:
    """The `optim` node of base.yaml (batch_size = its data.batch_size, 4) with `overrides` on top."""
    return _node("optim", overrides)
