"""Stable Diffusion v1 components for LD-ZNet (dissertation §3.3): VAE, UNet, CLIP text encoder, tokenizer, scheduler.

Two on-disk forms are accepted, the path coming from the config (`model.stable_diffusion.path`):
- a diffusers folder (`unet/`, `vae/`, `text_encoder/`, `tokenizer/`, optional `scheduler/`, `model_index.json`),
  e.g. a local copy of CompVis/stable-diffusion-v1-4;
- one original CompVis checkpoint (`sd-v1-4.ckpt` / `sd-v1-4-full-ema.ckpt` / `.safetensors`), converted with
  diffusers' own key converters; it carries no tokenizer, so `tokenizer_path` must name a folder with the CLIP
  `vocab.json` + `merges.txt` (e.g. the `tokenizer/` of a diffusers SD folder).

The scheduler is always SD's (scaled_linear betas 0.00085-0.012 over 1000 steps; docs/ref-ldznet.md §2.3): it
only defines the forward noising q(z_t | z) used for the LDM features and the Fig 3.1 coarse masks.
The sha256 of every file read is recorded in `components.record`. Random components of any architecture
(tiny for tests, SD size on the meta device for parameter counts) are built by the same code.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from common.checkpoints import load_torch_mapped, sha256_of_file, write_json

log = logging.getLogger(__name__)

# SD v1.x (docs/ref-ldznet.md §8): the diffusers defaults differ in cross_attention_dim and sample_size.
SD_UNET_CONFIG = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [320, 640, 1280, 1280],
    "layers_per_block": 2,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
    "norm_num_groups": 32,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
}
SD_VAE_CONFIG = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 512,
    "scaling_factor": 0.18215,
}
# CLIP ViT-L/14 text tower (openai/clip-vit-large-patch14), the text encoder of SD v1.
SD_TEXT_CONFIG = {
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "projection_dim": 768,
    "hidden_act": "quick_gelu",
}
SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
}
WEIGHT_NAMES = {
    "unet": ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"),
    "vae": ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"),
    "text_encoder": ("model.safetensors", "pytorch_model.bin"),
}
TOKENIZER_FILES = ("vocab.json", "merges.txt")


@dataclass
class StableDiffusionComponents:
    """The five SD parts LD-ZNet uses, plus where they came from (`record`: path, format, sha256 per file)."""

    vae: AutoencoderKL
    unet: UNet2DConditionModel
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer | None
    scheduler: DDPMScheduler
    record: dict[str, Any] = field(default_factory=dict)


def make_scheduler() -> DDPMScheduler:
    """SD's training noise schedule (scaled_linear 0.00085-0.012, 1000 steps)."""
    return DDPMScheduler(**SCHEDULER_CONFIG)


def sd_architecture() -> dict:
    return {"unet": dict(SD_UNET_CONFIG), "vae": dict(SD_VAE_CONFIG), "text_encoder": dict(SD_TEXT_CONFIG)}


def architecture_for(name: str | Path | Mapping) -> dict:
    """`"sd"`, `"tiny"`, a mapping, or a diffusers folder whose unet/vae/text_encoder config.json give the sizes."""
    if isinstance(name, Mapping):
        return {key: dict(value) for key, value in name.items()}
    if str(name) == "sd":
        return sd_architecture()
    if str(name) == "tiny":
        from ldznet.tiny_configs import tiny_architecture

        return tiny_architecture()
    folder = Path(name)
    architecture = {}
    for part in ("unet", "vae", "text_encoder"):
        config_path = folder / part / "config.json"
        if not config_path.is_file():
            raise FileNotFoundError(f"architecture {name!r}: expected 'sd', 'tiny' or a diffusers folder, but "
                                    f"{config_path} does not exist")
        import json

        config = json.loads(config_path.read_text())
        architecture[part] = {key: value for key, value in config.items() if not key.startswith("_")}
    return architecture


def _text_config(config: Mapping) -> CLIPTextConfig:
    keep = {key: value for key, value in config.items() if key not in ("architectures", "model_type", "dtype",
                                                                          "torch_dtype", "transformers_version")}
    return CLIPTextConfig(**keep)


def build_random_components(architecture: str | Mapping = "sd", tokenizer: CLIPTokenizer | None = None
                            ) -> StableDiffusionComponents:
    """Randomly initialised components (build under `with torch.device("meta"):` to count parameters only)."""
    architecture = architecture_for(architecture)
    unet = UNet2DConditionModel(**architecture["unet"])
    vae = AutoencoderKL(**architecture["vae"])
    text_encoder = CLIPTextModel(_text_config(architecture["text_encoder"]))
    return StableDiffusionComponents(vae=vae, unet=unet, text_encoder=text_encoder, tokenizer=tokenizer,
                                     scheduler=make_scheduler(), record={"path": None, "format": "random"})


def save_diffusers_folder(components: StableDiffusionComponents, folder: str | Path,
                          write_tokenizer: bool = True) -> Path:
    """Write components in the diffusers folder layout (safetensors weights)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    components.unet.save_pretrained(folder / "unet", safe_serialization=True)
    components.vae.save_pretrained(folder / "vae", safe_serialization=True)
    components.text_encoder.save_pretrained(folder / "text_encoder", safe_serialization=True)
    if write_tokenizer:
        if components.tokenizer is None:
            raise ValueError("save_diffusers_folder: components have no tokenizer to write")
        components.tokenizer.save_pretrained(folder / "tokenizer")
    components.scheduler.save_pretrained(folder / "scheduler")
    write_json(folder / "model_index.json", {
        "_class_name": "StableDiffusionPipeline",
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "DDPMScheduler"],
    })
    return folder


# --- file checks and hashes ---------------------------------------------------------------------------------

_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, cached per (path, size, mtime) within the process (SD weights are several GB)."""
    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _HASH_CACHE:
        _HASH_CACHE[key] = sha256_of_file(path)
    return _HASH_CACHE[key]


def _hash_folder_files(folder: Path, files: list[Path]) -> dict[str, str]:
    return {str(path.relative_to(folder)): file_sha256(path) for path in sorted(files)}


def check_diffusers_folder(folder: str | Path) -> dict[str, list[Path]]:
    """The files each part needs; raises FileNotFoundError listing everything missing."""
    folder = Path(folder)
    missing, found = [], {}
    for part, weight_names in WEIGHT_NAMES.items():
        config = folder / part / "config.json"
        weights = [folder / part / name for name in weight_names if (folder / part / name).is_file()]
        if not config.is_file():
            missing.append(str(config))
        if not weights:
            missing.append(f"{folder / part}/{' or '.join(weight_names)}")
        found[part] = [config, *weights[:1]]
    tokenizer_files = [folder / "tokenizer" / name for name in TOKENIZER_FILES]
    missing += [str(path) for path in tokenizer_files if not path.is_file()]
    found["tokenizer"] = tokenizer_files
    if missing:
        raise FileNotFoundError(
            f"Stable Diffusion folder {folder} is incomplete; missing: " + "; ".join(missing)
            + ". Expected the diffusers layout of CompVis/stable-diffusion-v1-4 (unet/, vae/, text_encoder/, "
              "tokenizer/), or give the path of one original checkpoint file (sd-v1-4.ckpt)."
        )
    return found


def load_tokenizer(folder: str | Path) -> CLIPTokenizer:
    """CLIP BPE tokenizer from a folder holding vocab.json and merges.txt."""
    folder = Path(folder)
    missing = [str(folder / name) for name in TOKENIZER_FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"tokenizer folder {folder} is incomplete; missing: {', '.join(missing)}")
    tokenizer = CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
    tokenizer.model_max_length = 77
    return tokenizer


def _check_scheduler(folder: Path) -> None:
    config_path = folder / "scheduler" / "scheduler_config.json"
    if not config_path.is_file():
        return
    import json

    given = json.loads(config_path.read_text())
    different = {key: (given[key], value) for key, value in SCHEDULER_CONFIG.items()
                 if key in given and key != "clip_sample" and given[key] != value}
    if different:
        log.warning("%s differs from SD's training schedule %s; LD-ZNet uses SD's (given, used): %s",
                    config_path, SCHEDULER_CONFIG, different)


def load_diffusers_folder(folder: str | Path, hash_files: bool = True) -> StableDiffusionComponents:
    folder = Path(folder)
    found = check_diffusers_folder(folder)
    _check_scheduler(folder)
    unet = UNet2DConditionModel.from_pretrained(str(folder), subfolder="unet", local_files_only=True)
    vae = AutoencoderKL.from_pretrained(str(folder), subfolder="vae", local_files_only=True)
    text_encoder = CLIPTextModel.from_pretrained(str(folder / "text_encoder"), local_files_only=True)
    tokenizer = load_tokenizer(folder / "tokenizer")
    files = [path for paths in found.values() for path in paths]
    record = {"path": str(folder.resolve()), "format": "diffusers",
              "sha256": _hash_folder_files(folder, files) if hash_files else None}
    return StableDiffusionComponents(vae=vae, unet=unet, text_encoder=text_encoder, tokenizer=tokenizer,
                                     scheduler=make_scheduler(), record=record)


def _read_original_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        checkpoint = load_torch_mapped(path)
    except Exception as error:  # noqa: BLE001 - re-raised with the file name and a way out
        raise ValueError(
            f"cannot read {path} with torch.load(weights_only=True): {error}. Convert it to .safetensors or a "
            "diffusers folder (e.g. with diffusers' convert_original_stable_diffusion_to_diffusers.py) and "
            "point model.stable_diffusion.path at that instead."
        ) from error
    while isinstance(checkpoint, dict) and "state_dict" in checkpoint:
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path}: expected a state dict (optionally under 'state_dict'), got {type(checkpoint)}")
    return checkpoint


def _load_converted(module: torch.nn.Module, state: dict[str, torch.Tensor], part: str, path: Path,
                    ignorable: tuple[str, ...] = ()) -> None:
    if not state:
        raise ValueError(f"{path}: no {part} weights found (is this a Stable Diffusion v1 checkpoint?)")
    missing, unexpected = module.load_state_dict(state, strict=False)
    unexpected = [key for key in unexpected if not key.endswith(ignorable)]
    missing = [key for key in missing if not key.endswith(ignorable)]
    if missing or unexpected:
        raise ValueError(f"{path}: {part} weights do not match the architecture; missing {missing[:8]} "
                         f"({len(missing)}), unexpected {unexpected[:8]} ({len(unexpected)})")


def load_single_file(path: str | Path, architecture: str | Path | Mapping = "sd",
                     tokenizer_path: str | Path | None = None, hash_files: bool = True
                     ) -> StableDiffusionComponents:
    """Components from one CompVis checkpoint (`model.diffusion_model.*`, `first_stage_model.*`,
    `cond_stage_model.transformer.*`), using the non-EMA UNet weights as the LD-ZNet code did (§2.3)."""
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint,
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
    )

    path = Path(path)
    if tokenizer_path is None:
        raise ValueError(f"{path} is a single checkpoint file, which holds no tokenizer: set "
                         "model.stable_diffusion.tokenizer_path to a folder with the CLIP vocab.json and merges.txt "
                         "(e.g. the tokenizer/ folder of a diffusers Stable Diffusion v1 copy)")
    tokenizer = load_tokenizer(tokenizer_path)
    architecture = architecture_for(architecture)
    checkpoint = _read_original_checkpoint(path)
    components = build_random_components(architecture, tokenizer)
    with torch.no_grad():
        _load_converted(components.unet, convert_ldm_unet_checkpoint(checkpoint, architecture["unet"]), "UNet", path)
        _load_converted(components.vae, convert_ldm_vae_checkpoint(checkpoint, architecture["vae"]), "VAE", path)
        _load_converted(components.text_encoder, convert_ldm_clip_checkpoint(checkpoint), "text encoder", path,
                        ignorable=("position_ids",))
    tokenizer_folder = Path(tokenizer_path)
    components.record = {
        "path": str(path.resolve()), "format": "single_file", "tokenizer_path": str(tokenizer_folder.resolve()),
        "sha256": ({path.name: file_sha256(path)}
                   | {f"tokenizer/{name}": file_sha256(tokenizer_folder / name) for name in TOKENIZER_FILES})
        if hash_files else None,
    }
    return components


def load_stable_diffusion(path: str | Path | None, architecture: str | Path | Mapping = "sd",
                          tokenizer_path: str | Path | None = None, hash_files: bool = True
                          ) -> StableDiffusionComponents:
    """Load from a diffusers folder or one original checkpoint file; clear errors for missing paths."""
    if path is None or str(path) in ("", "???"):
        raise ValueError("model.stable_diffusion.path is not set: give a diffusers Stable Diffusion v1 folder "
                         "or an sd-v1-4.ckpt file")
    path = Path(os.path.expanduser(str(path)))
    if not path.exists():
        raise FileNotFoundError(f"Stable Diffusion weights not found at {path} (model.stable_diffusion.path)")
    if path.is_dir():
        components = load_diffusers_folder(path, hash_files=hash_files)
    else:
        components = load_single_file(path, architecture, tokenizer_path, hash_files=hash_files)
    for module in (components.unet, components.vae, components.text_encoder):
        module.eval()
    return components


def components_from_config(config: Mapping) -> StableDiffusionComponents:
    """`model.stable_diffusion` node -> components (keys: path, architecture, tokenizer_path, hash_files)."""
    return load_stable_diffusion(config.get("path"), config.get("architecture", "sd"),
                                 config.get("tokenizer_path"), bool(config.get("hash_files", True)))
