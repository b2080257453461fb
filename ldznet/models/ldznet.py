"""LD-ZNet: ZNet plus internal features of the frozen LDM (dissertation §3.2.2, Tables 3.1-3.4).

The frozen SD UNet runs once on the noised latent z_t, conditioned on the same text (docs/ref-ldznet.md
§2.3); its features after spatial-attention modules 6-10 (`ldm_features.py`) enter the matching spatial-
attention modules of ZNet in one of two ways:

- "cross_attention" (LD-ZNet, the paper's method): each LDM feature map goes through its own attention pool
  (`attention_pool.py`), and each ZNet transformer block there gets an extra cross-attention over the pooled
  tokens between the text cross-attention and the feed-forward:
      x += attn1(norm1 x);  x += attn2(norm2 x, text);  x += ldm_attention(ldm_norm x, pooled tokens);
      x += ff(norm3 x)
- "concat" (the Table 3.4 ablation): the LDM feature map is concatenated channel-wise with ZNet's features
  right before the spatial-attention module and projected back to C channels by a 1x1 convolution (our
  choice of projection: the dissertation gives none; docs/ref-ldznet.md §2.6).

New layers keep PyTorch's default initialisation, as in the released code (not zero-initialised).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from diffusers.models.attention_processor import Attention
from torch import nn

from ldznet.models.attention_pool import AttentionPool
from ldznet.models.ldm_features import LDMFeatures
from ldznet.models.znet import VAE_DOWNSAMPLING, ZNet

FUSIONS = ("cross_attention", "concat")


class LDMCrossAttentionBlock(nn.Module):
    """SD's BasicTransformerBlock with the extra LDM cross-attention inserted before its feed-forward."""

    def __init__(self, block: nn.Module, channels: int, heads: int = 8):
        super().__init__()
        if block.norm_type != "layer_norm" or block.only_cross_attention or block.pos_embed is not None:
            raise ValueError("LD-ZNet injection expects SD v1 transformer blocks (layer_norm, self + cross attention)")
        self.block = block
        self.ldm_norm = nn.LayerNorm(channels)
        self.ldm_attention = Attention(query_dim=channels, cross_attention_dim=channels, heads=heads,
                                       dim_head=channels // heads)
        # Set by LDZNet before each ZNet forward; kept (not cleared) so gradient checkpointing can recompute.
        self.ldm_tokens: torch.Tensor | None = None

    def forward(self, hidden_states, attention_mask=None, encoder_hidden_states=None, encoder_attention_mask=None,
                timestep=None, cross_attention_kwargs=None, class_labels=None, added_cond_kwargs=None):
        if self.ldm_tokens is None:
            raise RuntimeError("LDMCrossAttentionBlock called without LDM tokens (call LDZNet.forward)")
        block = self.block
        kwargs = dict(cross_attention_kwargs or {})
        hidden_states = hidden_states + block.attn1(block.norm1(hidden_states), attention_mask=attention_mask,
                                                    **kwargs)
        hidden_states = hidden_states + block.attn2(block.norm2(hidden_states),
                                                    encoder_hidden_states=encoder_hidden_states,
                                                    attention_mask=encoder_attention_mask, **kwargs)
        tokens = self.ldm_tokens.to(hidden_states.dtype)
        hidden_states = hidden_states + self.ldm_attention(self.ldm_norm(hidden_states), encoder_hidden_states=tokens)
        return hidden_states + block.ff(block.norm3(hidden_states))


class LDMConcatTransformer(nn.Module):
    """A ZNet spatial-attention module whose input is [ZNet features, LDM features] projected to C channels."""

    def __init__(self, transformer: nn.Module, channels: int):
        super().__init__()
        self.transformer = transformer
        self.ldm_concat_projection = nn.Conv2d(2 * channels, channels, 1)
        self.ldm_feature: torch.Tensor | None = None

    def forward(self, hidden_states, *args, **kwargs):
        if self.ldm_feature is None:
            raise RuntimeError("LDMConcatTransformer called without an LDM feature (call LDZNet.forward)")
        if self.ldm_feature.shape[-2:] != hidden_states.shape[-2:]:
            raise ValueError(f"LDM feature {tuple(self.ldm_feature.shape)} and ZNet features "
                             f"{tuple(hidden_states.shape)} differ in size")
        fused = self.ldm_concat_projection(torch.cat([hidden_states, self.ldm_feature.to(hidden_states.dtype)], 1))
        return self.transformer(fused, *args, **kwargs)


class LDZNet(ZNet):
    """ZNet + frozen-LDM features of spatial-attention blocks `blocks` (6-10 in the paper, §3.2.2: the config's
    `model.ldm.blocks`, experiments/chapter3/base.yaml). `image_size`, `train_timesteps` and `eval_timestep` have
    no default either: they are `model.image_size` and `model.ldm.*` of that file."""

    def __init__(self, components, fusion: str = "cross_attention", *, blocks: Sequence[int],
                 image_size: int, latent: str = "sample", gradient_checkpointing: bool = False,
                 train_timesteps: Sequence[int], eval_timestep: int, eval_noise_seed: int = 0, heads: int = 8):
        if fusion not in FUSIONS:
            raise ValueError(f"LD-ZNet fusion must be one of {FUSIONS}, got {fusion!r}")
        # ZNet gets its own trainable copy of the UNet; the original becomes the frozen LDM.
        super().__init__(components, latent=latent, gradient_checkpointing=False, copy_unet=True,
                         eval_seed=eval_noise_seed)
        self.fusion = fusion
        self.variant = "ldznet" if fusion == "cross_attention" else "ldznet_concat"
        self.ldm_features = LDMFeatures(components.unet, components.scheduler, blocks, train_timesteps,
                                        eval_timestep, eval_noise_seed)
        latent_size = image_size // VAE_DOWNSAMPLING
        self.injected: dict[int, list[str]] = {}
        if fusion == "cross_attention":
            self.attention_pools = nn.ModuleDict()
        for number in self.ldm_features.blocks:
            block = self.ldm_features.layout[number]
            transformer = self.unet.get_submodule(block.name)
            if fusion == "cross_attention":
                self.attention_pools[str(number)] = AttentionPool(block.channels, block.size(latent_size),
                                                                  heads=heads)
                names = []
                for index, inner in enumerate(transformer.transformer_blocks):
                    transformer.transformer_blocks[index] = LDMCrossAttentionBlock(inner, block.channels, heads)
                    names.append(f"{block.name}.transformer_blocks.{index}")
                self.injected[number] = names
            else:
                parent_name, index = block.name.rsplit(".", 1)
                self.unet.get_submodule(parent_name)[int(index)] = LDMConcatTransformer(transformer, block.channels)
                self.injected[number] = [block.name]
        self.gradient_checkpointing = gradient_checkpointing
        if gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()

    def condition_on_ldm(self, z: torch.Tensor, text_states: torch.Tensor) -> None:
        features = self.ldm_features(z, text_states)
        for number, feature in features.items():
            if self.fusion == "cross_attention":
                tokens = self.attention_pools[str(number)](feature)
                for name in self.injected[number]:
                    self.unet.get_submodule(name).ldm_tokens = tokens
            else:
                for name in self.injected[number]:
                    self.unet.get_submodule(name).ldm_feature = feature
