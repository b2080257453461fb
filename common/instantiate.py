"""Build objects from config nodes that name a `_target_` (a dotted import path), without a registry.

    optimizer: {_target_: torch.optim.Adam, lr: 1e-4, _partial_: true}
    instantiate(cfg.optimizer)(params)

Nested nodes with their own `_target_` are built first (depth first); `_partial_: true` returns a
functools.partial so the caller can bind late arguments (parameters, datasets). Keyword arguments given to
`instantiate` override the config's.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf


def locate(path: str) -> Any:
    """Import `package.module.attribute` (attributes may be nested, e.g. a classmethod)."""
    parts = path.split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ModuleNotFoundError:
            continue
        try:
            for attribute in parts[split:]:
                obj = getattr(obj, attribute)
        except AttributeError as error:
            raise ImportError(f"_target_ {path!r}: {error}") from None
        return obj
    raise ImportError(f"_target_ {path!r}: no importable module in this path")


def _build(value: Any) -> Any:
    if isinstance(value, dict) and "_target_" in value:
        return instantiate(value)
    if isinstance(value, dict):
        return {key: _build(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_build(item) for item in value]
    return value


def instantiate(node: DictConfig | dict, **kwargs: Any) -> Any:
    """Call `node._target_` with the node's other keys (built recursively) and `kwargs`."""
    if isinstance(node, (DictConfig, ListConfig)):
        node = OmegaConf.to_container(node, resolve=True)
    if not isinstance(node, dict) or "_target_" not in node:
        raise ValueError(f"instantiate needs a mapping with a `_target_` key, got {node!r}")
    node = dict(node)
    target = locate(node.pop("_target_"))
    partial = bool(node.pop("_partial_", False))
    arguments = {key: _build(value) for key, value in node.items()}
    arguments.update(kwargs)
    if partial:
        return functools.partial(target, **arguments)
    return target(**arguments)
