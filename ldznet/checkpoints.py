"""Save and load trained Chapter 3 segmenters (RGBNet, ZNet, LD-ZNet, LD-ZNet-concat).

A segmenter file holds only what training changed: the trainable weights, their EMA copy (used for
evaluation, docs/ref-ldznet.md §3.1), the model options (variant, sizes, LDM blocks and timesteps), the task
it was trained for and the Stable Diffusion path + sha256 it was built on. The frozen parts (VAE, CLIP, the
frozen LDM UNet) are loaded again from that SD path, so a file stays ~3.7 GB instead of ~8 GB for LD-ZNet.
Files are written atomically (common.checkpoints) and read with `weights_only=True`.

`load_segmenter` also reads the Lightning checkpoints of `ldznet.train` (`last.ckpt`, `best.ckpt`), which
carry the same information under the key `ldznet_segmenter`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from common.checkpoints import load_torch, save_torch
from ldznet.models import build_segmenter, model_options
from ldznet.stable_diffusion import components_from_config

log = logging.getLogger(__name__)

FORMAT = "ldznet-segmenter/1"
DEFAULT_TASK = "phrasecut"


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: parameter.detach().cpu().clone() for name, parameter in model.named_parameters()
            if parameter.requires_grad}


def segmenter_header(model_cfg: Mapping, task: str, stable_diffusion_record: Mapping | None) -> dict[str, Any]:
    """Everything but the weights (also stored inside Lightning checkpoints)."""
    options = model_options(model_cfg)
    return {"format": FORMAT, "variant": options["variant"], "task": task, "model": options,
            "stable_diffusion_record": dict(stable_diffusion_record or {})}


def save_segmenter(model: nn.Module, path: str | Path, model_cfg: Mapping, task: str = DEFAULT_TASK,
                   ema_state_dict: Mapping[str, torch.Tensor] | None = None,
                   stable_diffusion_record: Mapping | None = None, extra: Mapping | None = None) -> Path:
    """Write trainable weights (+ EMA) and the model description to `path` atomically."""
    header = segmenter_header(model_cfg, task, stable_diffusion_record)
    if header["variant"] != getattr(model, "variant", None):
        raise ValueError(f"model_cfg says variant {header['variant']!r} but the model is "
                         f"{getattr(model, 'variant', type(model).__name__)!r}")
    payload = {**header, "state_dict": trainable_state_dict(model),
               "ema_state_dict": {key: value.detach().cpu() for key, value in (ema_state_dict or {}).items()} or None,
               "extra": dict(extra or {})}
    save_torch(payload, path)
    return Path(path)


def read_segmenter_file(path: str | Path) -> dict[str, Any]:
    """The payload of a segmenter file or of a Lightning checkpoint of `ldznet.train`, in one form."""
    path = Path(path)
    checkpoint = load_torch(path)
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path}: not an LD-ZNet checkpoint (got {type(checkpoint).__name__})")
    if checkpoint.get("format") == FORMAT:
        return checkpoint
    if "ldznet_segmenter" in checkpoint:  # Lightning checkpoint written by ldznet.lit_module
        header = checkpoint["ldznet_segmenter"]
        state = {key[len("model."):]: value for key, value in checkpoint.get("state_dict", {}).items()
                 if key.startswith("model.")}
        ema = checkpoint.get("ema_state_dict") or None
        return {**header, "state_dict": state, "ema_state_dict": ema.get("shadow") if ema else None, "extra": {}}
    raise ValueError(f"{path}: not an LD-ZNet segmenter checkpoint (no 'format': {FORMAT!r} and no "
                     "'ldznet_segmenter' key); keys: " + ", ".join(sorted(map(str, checkpoint))[:10]))


def load_segmenter(checkpoint_path: str | Path, device: str | torch.device = "cpu", *, variant: str | None = None,
                   task: str | None = None, use_ema: bool = True, stable_diffusion_path: str | None = None,
                   tokenizer_path: str | None = None, components=None, **model_overrides) -> nn.Module:
    """Rebuild a segmenter in eval mode with its (EMA) trainable weights.

    `variant` / `task`: what the caller expects; a checkpoint of another variant or task raises. The SD
    weights come from the path stored in the checkpoint unless `stable_diffusion_path` (or ready
    `components`) is given. Other keyword arguments override model options (e.g. `eval_seed=1`).
    """
    path = Path(checkpoint_path)
    payload = read_segmenter_file(path)
    if variant is not None and payload["variant"] != variant:
        raise ValueError(f"{path} holds a {payload['variant']!r} model, not the expected {variant!r} "
                         "(variant mismatch)")
    if task is not None and payload["task"] != task:
        raise ValueError(f"{path} was trained for task {payload['task']!r}, not the expected {task!r} "
                         "(task mismatch)")
    options = dict(payload["model"])
    unknown = sorted(set(model_overrides) - set(options))
    if unknown:
        raise ValueError(f"load_segmenter: unknown override(s) {unknown}; model options are {sorted(options)}")
    options.update(model_overrides)
    stable_diffusion = dict(options.get("stable_diffusion") or {})
    if stable_diffusion_path is not None:
        stable_diffusion["path"] = str(stable_diffusion_path)
    if tokenizer_path is not None:
        stable_diffusion["tokenizer_path"] = str(tokenizer_path)
    options["stable_diffusion"] = stable_diffusion
    options = model_options(options, source=f"the model options stored in {path}")
    if components is None:
        components = components_from_config(stable_diffusion)
        _check_same_weights(path, payload.get("stable_diffusion_record") or {}, components.record)
    model = build_segmenter(options, components)
    weights = payload["state_dict"]
    if use_ema:
        if payload.get("ema_state_dict"):
            weights = payload["ema_state_dict"]
        else:
            log.info("%s has no EMA weights; using the raw trainable weights", path)
    expected = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    missing, unexpected = sorted(expected - set(weights)), sorted(set(weights) - expected)
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not fit the {payload['variant']} model; missing {missing[:5]} "
                         f"({len(missing)}), unexpected {unexpected[:5]} ({len(unexpected)})")
    model.load_state_dict(weights, strict=False)
    model.checkpoint_info = {key: payload[key] for key in ("variant", "task", "model", "stable_diffusion_record")}
    return model.to(device).eval()


def _check_same_weights(path: Path, saved: Mapping, loaded: Mapping) -> None:
    """Warn when the SD files differ from those the segmenter was trained on (same name, other sha256)."""
    saved_hashes, loaded_hashes = saved.get("sha256") or {}, loaded.get("sha256") or {}
    different = sorted(name for name in set(saved_hashes) & set(loaded_hashes)
                       if saved_hashes[name] != loaded_hashes[name])
    if different:
        log.warning("%s was trained on Stable Diffusion files with other sha256 than those loaded now: %s",
                    path, ", ".join(different))
