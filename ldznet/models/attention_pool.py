"""The attention pool that turns an LDM feature map into tokens for LD-ZNet's cross-attention (§3.2.2).

Adapted from CLIP's attention pooling (docs/ref-ldznet.md §2.4): the map (B, C, h, w) becomes h*w tokens,
the spatial mean is prepended as an extra token, a learned positional embedding is added, and multi-head
self-attention runs over all h*w + 1 tokens followed by an output projection. Unlike CLIP, all h*w + 1 tokens
are returned (B, h*w + 1, C): they are the keys/values of the extra cross-attention in ZNet. The dissertation:
the pool "acts as a learnable layer to match the range of the features participating in the cross-attention,
but also adds a positional encoding".

The positional embedding is built for one feature size (`size`, e.g. 12 for blocks 6, 8-10 and 6 for block 7
at 384x384 input); for another size its spatial part is resized bicubically and the mean token's entry kept.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class AttentionPool(nn.Module):
    """(B, C, h, w) -> (B, h*w + 1, C): mean token + positional embedding + multi-head self-attention."""

    def __init__(self, channels: int, size: int, head_channels: int | None = None, heads: int = 8):
        super().__init__()
        head_channels = head_channels or channels // heads
        if channels % head_channels:
            raise ValueError(f"attention pool: {channels} channels are not divisible by {head_channels} per head")
        self.channels, self.size, self.heads = channels, size, channels // head_channels
        self.positional_embedding = nn.Parameter(torch.randn(size * size + 1, channels) / math.sqrt(channels))
        self.qkv = nn.Linear(channels, 3 * channels)
        self.out_projection = nn.Linear(channels, channels)

    def positional_embedding_for(self, height: int, width: int) -> torch.Tensor:
        if (height, width) == (self.size, self.size):
            return self.positional_embedding
        mean_token, spatial = self.positional_embedding[:1], self.positional_embedding[1:]
        grid = spatial.T.reshape(1, self.channels, self.size, self.size)
        resized = F.interpolate(grid, size=(height, width), mode="bicubic", align_corners=False)
        return torch.cat([mean_token, resized.reshape(self.channels, height * width).T], dim=0)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.dim() != 4 or features.shape[1] != self.channels:
            raise ValueError(f"attention pool expects (B, {self.channels}, h, w), got {tuple(features.shape)}")
        batch, channels, height, width = features.shape
        tokens = features.flatten(2).transpose(1, 2)  # (B, hw, C)
        tokens = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1)
        tokens = tokens + self.positional_embedding_for(height, width).to(tokens.dtype)
        query, key, value = self.qkv(tokens).chunk(3, dim=-1)

        def split_heads(x: torch.Tensor) -> torch.Tensor:
            return x.reshape(batch, -1, self.heads, channels // self.heads).transpose(1, 2)

        attended = F.scaled_dot_product_attention(split_heads(query), split_heads(key), split_heads(value))
        return self.out_projection(attended.transpose(1, 2).reshape(batch, -1, channels))
