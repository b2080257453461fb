"""Tiny Stable Diffusion configs with SD v1's topology, and a writer for a tiny random SD on disk.

The tiny UNet keeps what LD-ZNet depends on (docs/ref-ldznet.md §8): 4 resolution levels, 2 layers per
block, cross-attention in levels 0-2 and the middle, so there are the same 16 spatial-attention modules
with the same diffusers names as SD v1 (§2.1). Channels are small so the whole chain (train a few steps,
evaluate, probe) runs in seconds on a CPU. A tiny VAE (x8 downsampling, 4 latent channels) and a tiny
CLIP text encoder (77 positions, width = the UNet's cross-attention width) complete the set.

`write_tiny_stable_diffusion(folder)` saves random tiny components in the real diffusers folder layout
(unet/, vae/, text_encoder/, tokenizer/, scheduler/, model_index.json), so tests, the CPU miniature and a
user's real SD folder all go through the same loading code (`ldznet.stable_diffusion`). A tokenizer cannot
be downloaded, so the tiny one is a byte-level CLIP BPE vocabulary written here (every text still tokenizes,
character by character when no merge applies). `write_original_checkpoint` writes the same weights as one
`sd-v1-4.ckpt`-style file (CompVis key names) to test single-file loading.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from common.checkpoints import save_torch, save_weights, write_json

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


def write_tiny_stable_diffusion(folder: str | Path, seed: int = 0) -> Path:
    """Random tiny SD components saved in the diffusers folder layout; returns `folder`."""
    from ldznet.stable_diffusion import build_random_components, save_diffusers_folder

    torch.manual_seed(seed)
    components = build_random_components(tiny_architecture())
    write_tiny_tokenizer(Path(folder) / "tokenizer")
    return save_diffusers_folder(components, folder, write_tokenizer=False)


# --- diffusers -> CompVis key names (only for writing test checkpoints; loading uses diffusers' converter) ---

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



# --- a toy PhraseCut in the real format, for smoke tests of the whole chain -----------------------------------

TOY_SHAPES = (("red", (220, 40, 40)), ("blue", (40, 60, 220)), ("green", (40, 200, 60)))


def write_toy_phrasecut(root: str | Path, samples_per_split: int = 6, size: int = 64, seed: int = 0,
                        splits=("train", "val", "test")) -> Path:
    """A few images with one coloured square on grey noise, phrase "<colour> square", in VGPhraseCut_v0 format."""
    import numpy as np

    from ldznet.data.phrasecut import write_phrasecut_split

    rng = np.random.default_rng(seed)
    next_id = 1000
    for split in splits:
        samples = []
        for _ in range(samples_per_split):
            image = rng.integers(90, 140, size=(size, size, 3), dtype=np.uint8)
            colour_name, colour = TOY_SHAPES[int(rng.integers(len(TOY_SHAPES)))]
            side = int(rng.integers(size // 4, size // 2))
            x0, y0 = (int(v) for v in rng.integers(0, size - side, size=2))
            image[y0:y0 + side, x0:x0 + side] = colour
            square = [[x0, y0], [x0 + side, y0], [x0 + side, y0 + side], [x0, y0 + side]]
            samples.append({"image_id": next_id, "image": image,
                            "phrases": [{"phrase": f"{colour_name} square", "instances": [[square]]}]})
            next_id += 1
        write_phrasecut_split(root, split, samples)
    return Path(root)
