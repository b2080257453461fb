"""The four Chapter 3 segmenters, built from Stable Diffusion components by one function.

    rgbnet         RGB stem + SD-initialised UNet + head            (`rgbnet.py`)
    znet           frozen VAE -> z -> SD-initialised UNet + head    (`znet.py`)
    ldznet         ZNet + LDM features via attention pools and cross-attention   (`ldznet.py`)
    ldznet_concat  ZNet + LDM features concatenated (Table 3.4 ablation)         (`ldznet.py`)

Every one is an nn.Module with forward(images (B,3,H,W) in [-1,1], prompts list[str]) -> logits (B,1,H,W).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import nn

from common.config import require
from ldznet.models.ldznet import LDZNet
from ldznet.models.rgbnet import RGBNet
from ldznet.models.znet import ZNet

VARIANTS = ("rgbnet", "znet", "ldznet", "ldznet_concat")

# The model options (the `model` node of experiments/chapter3/base.yaml, which holds their values: issue 14, one
# source of truth). Every one is required; `stable_diffusion` (where the SD weights come from) is optional here.
MODEL_KEYS = ("variant", "image_size", "latent", "gradient_checkpointing", "eval_seed", "ldm.blocks",
              "ldm.train_timesteps", "ldm.eval_timestep", "rgb_stem_channels")
MODEL_SOURCE = "experiments/chapter3/base.yaml (node `model`)"


def model_options(model_cfg: Mapping | DictConfig, source: str | Path = MODEL_SOURCE) -> dict[str, Any]:
    """Plain dict of the model options (stable_diffusion node passed through). A missing option is a
    MissingConfigKey naming `model.<key>` and `source` (no default in code); an unknown one a ValueError."""
    given = OmegaConf.to_container(model_cfg, resolve=True) if isinstance(model_cfg, DictConfig) else dict(model_cfg)
    valid = sorted({key.split(".")[0] for key in MODEL_KEYS})
    unknown = sorted(set(given) - set(valid) - {"stable_diffusion"})
    if unknown:
        raise ValueError(f"unknown model option(s) {unknown}; valid: {valid} + stable_diffusion")
    for key in MODEL_KEYS:
        require({"model": given}, "model." + key, source)
    options = {**given, "ldm": dict(given["ldm"])}
    if options["variant"] not in VARIANTS:
        raise ValueError(f"model.variant must be one of {VARIANTS}, got {options['variant']!r}")
    return options


def build_segmenter(model_cfg: Mapping | DictConfig, components) -> nn.Module:
    """The segmenter named by `model_cfg.variant`, initialised from SD `components` (which it takes over)."""
    options = model_options(model_cfg)
    variant = options["variant"]
    checkpointing = bool(options["gradient_checkpointing"])
    if variant == "rgbnet":
        return RGBNet(components, options["rgb_stem_channels"], gradient_checkpointing=checkpointing)
    if variant == "znet":
        return ZNet(components, options["latent"], gradient_checkpointing=checkpointing,
                    eval_seed=int(options["eval_seed"]))
    ldm = options["ldm"]
    return LDZNet(components, fusion="cross_attention" if variant == "ldznet" else "concat", blocks=ldm["blocks"],
                  image_size=int(options["image_size"]), latent=options["latent"],
                  gradient_checkpointing=checkpointing, train_timesteps=ldm["train_timesteps"],
                  eval_timestep=int(ldm["eval_timestep"]), eval_noise_seed=int(options["eval_seed"]))


# Parameter groups, by the first matching name fragment (used by `ldznet.summary` and the tests).
PARTS = (
    ("vae", "latent_encoder."),
    ("text_encoder", "text_conditioning."),
    ("ldm_unet", "ldm_features."),
    ("attention_pools", "attention_pools."),
    ("ldm_cross_attention", ".ldm_norm."),
    ("ldm_cross_attention", ".ldm_attention."),
    ("ldm_concat_projection", ".ldm_concat_projection."),
    ("rgb_stem", "rgb_stem."),
    ("head", "head."),
    ("znet_unet", "unet."),
)


def part_of(parameter_name: str) -> str:
    for part, fragment in PARTS:
        if (fragment.startswith(".") and fragment in parameter_name) or parameter_name.startswith(fragment):
            return part
    raise KeyError(f"parameter {parameter_name!r} belongs to no known part")


def parameter_counts(model: nn.Module) -> dict[str, dict[str, int]]:
    """{part: {"trainable": n, "frozen": n}} in PARTS order (parts without parameters left out)."""
    counts: dict[str, dict[str, int]] = {}
    for name, parameter in model.named_parameters():
        entry = counts.setdefault(part_of(name), {"trainable": 0, "frozen": 0})
        entry["trainable" if parameter.requires_grad else "frozen"] += parameter.numel()
    order = [part for part, _ in PARTS]
    return dict(sorted(counts.items(), key=lambda item: order.index(item[0])))
