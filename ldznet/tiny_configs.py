"""Tiny Stable Diffusion configs with SD v1's topology, and a writer for a tiny random SD on disk.

The tiny UNet keeps what LD-ZNet depends on (docs/ref-ldznet.md §8): 4 resolution levels, 2 layers per
block, cross-attention in levels 0-2 and the middle, so there are the same 16 spatial-attention modules
with the same diffusers names as SD v1 (§2.1). Channels are small so the whole chain (train a few steps,
evaluate, probe) runs in seconds on a CPU. A tiny VAE (x8 downsampling, 4 latent channels) and a tiny
CLIP text encoder (77 positions, width = the UNet's cross-attention width) complete the set.

`common.testing.write_tiny_stable_diffusion(folder)` saves random tiny components with these configs in the
real diffusers folder layout (unet/, vae/, text_encoder/, tokenizer/, scheduler/, model_index.json), so tests,
the CPU miniature and a user's real SD folder all go through the same loading code (`ldznet.stable_diffusion`).
A tokenizer cannot be downloaded, so the tiny one is a byte-level CLIP BPE vocabulary written here (every text
still tokenizes, character by character when no merge applies).
"""

from __future__ import annotations

from pathlib import Path

from common.checkpoints import write_json

TINY_UNET_CONFIG = {
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [32, 32, 64, 64],
    "layers_per_block": 2,
    "cross_attention_dim": 32,
    "attention_head_dim": 8,
    "norm_num_groups": 32,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
}

TINY_VAE_CONFIG = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [8, 8, 16, 16],
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 8,
    "sample_size": 64,
    "scaling_factor": 0.18215,
}

TINY_TEXT_CONFIG = {
    "vocab_size": 1000,
    "hidden_size": 32,
    "intermediate_size": 37,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 77,
    "projection_dim": 32,
    "hidden_act": "quick_gelu",
}

# Words that get whole-word BPE merges in the tiny tokenizer (others fall back to single characters).
TINY_WORDS = (
    "a", "an", "the", "of", "photo", "photograph", "image", "picture", "cropped", "good", "bad", "one",
    "cat", "dog", "person", "man", "woman", "car", "tree", "sky", "road", "building", "window", "shirt",
    "red", "blue", "green", "white", "black", "large", "small", "left", "right", "astronaut", "stonehenge",
    "square", "circle", "disk", "stripe", "object", "background",
)


def tiny_architecture(words=TINY_WORDS) -> dict:
    """The three tiny model configs, keyed like the diffusers folder's subfolders (`words`: those given to
    `write_tiny_tokenizer`, so the text config's start/end token ids match the tokenizer's)."""
    count = len(tiny_vocabulary(words)[0])  # the tiny tokenizer's start/end tokens are its last two entries
    text = {**TINY_TEXT_CONFIG, "bos_token_id": count - 2, "eos_token_id": count - 1, "pad_token_id": count - 1}
    return {"unet": dict(TINY_UNET_CONFIG), "vae": dict(TINY_VAE_CONFIG), "text_encoder": text}


def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins for bytes used by byte-level BPE (printable bytes map to themselves)."""
    printable = set(range(ord("!"), ord("~") + 1)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    symbols, shifted = [], 0
    for byte in range(256):
        if byte in printable:
            symbols.append(chr(byte))
        else:
            symbols.append(chr(256 + shifted))
            shifted += 1
    return symbols


def bpe_pieces(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """CLIP's BPE on one lower-case word: repeatedly merge (every occurrence of) the lowest-ranked adjacent pair."""
    pieces = list(word[:-1]) + [word[-1] + "</w>"]
    while len(pieces) > 1:
        pairs = {(a, b) for a, b in zip(pieces, pieces[1:]) if (a, b) in ranks}
        if not pairs:
            break
        first, second = min(pairs, key=ranks.__getitem__)
        merged, k = [], 0
        while k < len(pieces):
            if k + 1 < len(pieces) and pieces[k] == first and pieces[k + 1] == second:
                merged.append(first + second)
                k += 2
            else:
                merged.append(pieces[k])
                k += 1
        pieces = merged
    return pieces


def tiny_vocabulary(words=TINY_WORDS) -> tuple[list[str], list[tuple[str, str]]]:
    """Byte-level CLIP BPE vocabulary (bytes, bytes + "</w>", merged words, then start/end tokens) and merges.

    Every word of `words` becomes one token, as in CLIP's vocabulary. BPE applies merges by rank anywhere in a
    word, so a word's merges are built from the pieces the earlier merges already leave ("sand" after "an" and
    "and": s + and</w> -> sand</w>); building each word's chain from single characters instead left "sand",
    "green", "orange", "triangle" ... in pieces. New merges rank after all earlier ones, so they never change
    how an earlier word is split.
    """
    symbols = _byte_symbols()
    vocabulary = symbols + [symbol + "</w>" for symbol in symbols]
    known = set(vocabulary)
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    for word in words:
        pieces = bpe_pieces(word, ranks)
        while len(pieces) > 1:
            pair = (pieces[0], pieces[1])
            if pair not in ranks:
                ranks[pair] = len(merges)
                merges.append(pair)
            pieces = [pieces[0] + pieces[1], *pieces[2:]]
            if pieces[0] not in known:
                known.add(pieces[0])
                vocabulary.append(pieces[0])
    vocabulary += ["<|startoftext|>", "<|endoftext|>"]
    if len(vocabulary) > TINY_TEXT_CONFIG["vocab_size"]:
        raise ValueError(f"tiny tokenizer has {len(vocabulary)} tokens, more than the tiny text encoder's "
                         f"vocab_size {TINY_TEXT_CONFIG['vocab_size']}")
    return vocabulary, merges


def write_tiny_tokenizer(folder: str | Path, words=TINY_WORDS) -> Path:
    """Write vocab.json + merges.txt (+ configs) of a small CLIP BPE tokenizer into `folder`."""
    folder = Path(folder)
    vocabulary, merges = tiny_vocabulary(words)
    write_json(folder / "vocab.json", {token: index for index, token in enumerate(vocabulary)})
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    write_json(folder / "tokenizer_config.json", {
        "tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
    })
    write_json(folder / "special_tokens_map.json", {
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
    })
    return folder
