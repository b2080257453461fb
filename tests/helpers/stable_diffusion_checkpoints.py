"""diffusers -> CompVis key names, and a writer of one `sd-v1-4.ckpt`-style file, to test single-file loading
(loading uses diffusers' converter; this is the inverse, written independently for the tests)."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from common.checkpoints import save_torch, save_weights

_RESNET_NAMES = (("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"),
                 ("conv2", "out_layers.3"), ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection"))


def _rename_resnet(rest: str) -> str:
    for new, old in _RESNET_NAMES:
        if rest.startswith(new + "."):
            return old + rest[len(new):]
    raise KeyError(f"unexpected UNet resnet parameter {rest!r}")


def unet_key_to_original(key: str, layers_per_block: int = 2, levels: int = 4) -> str:
    """diffusers UNet2DConditionModel key -> CompVis `model.diffusion_model.*` key (SD v1 layout)."""
    plain = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
    stride = layers_per_block + 1
    for new, old in plain.items():
        if key.startswith(new + "."):
            return "model.diffusion_model." + old + key[len(new):]
    if match := re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key):
        level, kind, layer, rest = int(match[1]), match[2], int(match[3]), match[4]
        index = level * stride + layer + 1
        new_key = f"input_blocks.{index}.0.{_rename_resnet(rest)}" if kind == "resnets" \
            else f"input_blocks.{index}.1.{rest}"
    elif match := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key):
        new_key = f"input_blocks.{(int(match[1]) + 1) * stride}.0.op.{match[2]}"
    elif match := re.match(r"mid_block\.resnets\.(\d+)\.(.*)", key):
        new_key = f"middle_block.{2 * int(match[1])}.{_rename_resnet(match[2])}"
    elif match := re.match(r"mid_block\.attentions\.0\.(.*)", key):
        new_key = f"middle_block.1.{match[1]}"
    elif match := re.match(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key):
        level, kind, layer, rest = int(match[1]), match[2], int(match[3]), match[4]
        index = level * stride + layer
        new_key = f"output_blocks.{index}.0.{_rename_resnet(rest)}" if kind == "resnets" \
            else f"output_blocks.{index}.1.{rest}"
    elif match := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key):
        level = int(match[1])
        has_attention = level > 0  # SD v1: up_blocks.0 is UpBlock2D without attention
        new_key = f"output_blocks.{level * stride + stride - 1}.{2 if has_attention else 1}.conv.{match[2]}"
    else:
        raise KeyError(f"unexpected UNet parameter {key!r}")
    return "model.diffusion_model." + new_key


def vae_key_to_original(key: str, value: torch.Tensor, levels: int = 4) -> tuple[str, torch.Tensor]:
    """diffusers AutoencoderKL key -> CompVis `first_stage_model.*` key (attention linears become 1x1 convs)."""
    rest = key
    if match := re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.*)", key):
        names = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
        inner = match[2]
        for new, old in names.items():
            if inner.startswith(new + "."):
                inner = old + inner[len(new):]
                break
        if value.ndim == 2:
            value = value[:, :, None, None]
        rest = f"{match[1]}.mid.attn_1.{inner}"
    elif match := re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.*)", key):
        rest = f"{match[1]}.mid.block_{int(match[2]) + 1}.{match[3]}"
    elif match := re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
        rest = f"encoder.down.{match[1]}.block.{match[2]}.{match[3]}"
    elif match := re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key):
        rest = f"encoder.down.{match[1]}.downsample.conv.{match[2]}"
    elif match := re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
        rest = f"decoder.up.{levels - 1 - int(match[1])}.block.{match[2]}.{match[3]}"
    elif match := re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key):
        rest = f"decoder.up.{levels - 1 - int(match[1])}.upsample.conv.{match[2]}"
    elif match := re.match(r"(encoder|decoder)\.conv_norm_out\.(.*)", key):
        rest = f"{match[1]}.norm_out.{match[2]}"
    rest = rest.replace("conv_shortcut", "nin_shortcut")
    return "first_stage_model." + rest, value


def write_original_checkpoint(components, path: str | Path) -> Path:
    """Save components' UNet, VAE and text encoder as one CompVis-style checkpoint (`.ckpt` or `.safetensors`)."""
    unet_config = components.unet.config
    state = {}
    for key, value in components.unet.state_dict().items():
        state[unet_key_to_original(key, unet_config.layers_per_block, len(unet_config.block_out_channels))] = value
    levels = len(components.vae.config.block_out_channels)
    for key, value in components.vae.state_dict().items():
        new_key, new_value = vae_key_to_original(key, value, levels)
        state[new_key] = new_value
    for key, value in components.text_encoder.state_dict().items():
        state["cond_stage_model.transformer." + key] = value
    path = Path(path)
    if path.suffix == ".safetensors":
        save_weights(state, path)
    else:
        save_torch({"state_dict": {key: value.contiguous() for key, value in state.items()}, "global_step": 0},
                   path)
    return path
