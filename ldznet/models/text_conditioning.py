"""Frozen CLIP text states, the text condition of ZNet, LD-ZNet and the frozen LDM (dissertation §3.3).

As in SD and the LD-ZNet code (docs/ref-ldznet.md §1.3): the prompt is tokenized to exactly 77 tokens
(start, words, end, padding with the end token) and the text encoder's last hidden states (B, 77, C) are the
cross-attention context. The encoder is never trained (kept in eval mode, no gradients).
- The empty prompt "" is valid: it gives SD's unconditional embedding (start + end tokens), used by the
  Fig 3.1 coarse masks.
- A prompt longer than 77 tokens is truncated to 75 word tokens + the end token, as SD does; a warning names it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import nn

log = logging.getLogger(__name__)

MAX_TOKENS = 77


def check_prompts(prompts: Sequence[str], batch_size: int | None = None) -> list[str]:
    """A list of strings, one per image; anything else raises naming what was given."""
    if isinstance(prompts, str) or not isinstance(prompts, Sequence) or not all(isinstance(p, str) for p in prompts):
        raise TypeError(f"prompts must be a list of strings, got {type(prompts).__name__}: {prompts!r:.120}")
    if batch_size is not None and len(prompts) != batch_size:
        raise ValueError(f"got {len(prompts)} prompts for a batch of {batch_size} images")
    return list(prompts)


class FrozenTextConditioning(nn.Module):
    """Tokenizer + frozen CLIP text encoder -> (B, 77, C) text states."""

    def __init__(self, tokenizer, text_encoder: nn.Module, max_tokens: int = MAX_TOKENS):
        super().__init__()
        positions = text_encoder.config.max_position_embeddings
        if positions < max_tokens:
            raise ValueError(f"text encoder has {positions} positions, fewer than the {max_tokens} tokens SD uses")
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder.requires_grad_(False).eval()
        self.max_tokens = max_tokens

    def train(self, mode: bool = True) -> FrozenTextConditioning:
        super().train(mode)
        self.text_encoder.eval()  # frozen: dropout etc. always off
        return self

    def tokenize(self, prompts: Sequence[str]) -> torch.Tensor:
        if self.tokenizer is None:
            raise RuntimeError("FrozenTextConditioning has no tokenizer (built for parameter counting only)")
        prompts = check_prompts(prompts)
        full_lengths = [len(ids) for ids in self.tokenizer(prompts, truncation=False).input_ids]
        for prompt, length in zip(prompts, full_lengths):
            if length > self.max_tokens:
                log.warning("prompt of %d tokens truncated to %d (SD's text length): %.80s...", length,
                            self.max_tokens, prompt)
        encoded = self.tokenizer(prompts, padding="max_length", max_length=self.max_tokens, truncation=True,
                                 return_tensors="pt")
        return encoded.input_ids

    @torch.no_grad()
    def forward(self, prompts: Sequence[str]) -> torch.Tensor:
        device = next(self.text_encoder.parameters()).device
        input_ids = self.tokenize(prompts).to(device)
        return self.text_encoder(input_ids=input_ids).last_hidden_state
