"""The tiny LDM: trains a few steps, is saved in the diffusers layout and loads back through the SD loader."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

pytest.importorskip("ldznet.stable_diffusion")

from demo import tiny_ldm  # noqa: E402

TINY = {
    "seed": 0,
    "data": {"n_images": 24, "size": 32, "illustration_fraction": 0.3},
    "vae": {"arch": {"block_out_channels": [8, 8, 8, 8], "layers_per_block": 1, "norm_num_groups": 4},
            "steps": 2, "batch": 4, "crop": 16, "lr": 1e-3, "kl_weight": 1e-3},
    "text": {"arch": {"hidden_size": 16, "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2},
             "steps": 2, "batch": 8, "lr": 1e-3, "image_width": 4, "held_out": 8},
    "unet": {"arch": {"block_out_channels": [8, 8, 8, 8], "norm_num_groups": 4, "attention_head_dim": 8},
             "steps": 2, "batch": 4, "lr": 1e-3, "uncond_prob": 0.5},
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_ldm")
    record = tiny_ldm.train_tiny_ldm(OmegaConf.create(TINY), folder)
    return folder, record


def test_folder_has_diffusers_layout(trained):
    folder, record = trained
    for part in ("unet/config.json", "vae/config.json", "text_encoder/config.json", "tokenizer/vocab.json",
                 "tokenizer/merges.txt", "scheduler/scheduler_config.json", "model_index.json"):
        assert (folder / part).is_file(), part
    assert record["n_images"] == 24 and record["scaling_factor"] > 0


def test_round_trip_through_stable_diffusion_loader(trained):
    folder, record = trained
    components = tiny_ldm.load_tiny_ldm(folder)
    assert components.record["format"] == "diffusers"
    assert components.vae.config.scaling_factor == pytest.approx(record["scaling_factor"])
    # the loaded UNet keeps SD v1's 16 spatial-attention modules
    attentions = [m for m in components.unet.modules() if type(m).__name__ == "Transformer2DModel"]
    assert len(attentions) == 16
    ids = components.tokenizer(["a red circle on grass"], padding="max_length", max_length=77,
                               return_tensors="pt").input_ids
    # whole-word merges: start, 5 words, end (the shape-world words are in the tiny vocabulary)
    assert (ids[0] != components.tokenizer.eos_token_id).sum().item() == 6
    with torch.no_grad():
        context = components.text_encoder(ids).last_hidden_state
        latent = components.vae.encode(torch.zeros(1, 3, 32, 32)).latent_dist.mode()
        eps = components.unet(latent, torch.tensor([400]), context).sample
    assert context.shape == (1, 77, 16) and latent.shape == (1, 4, 4, 4) and eps.shape == latent.shape


def test_training_is_deterministic(tmp_path):
    config = OmegaConf.create(TINY)
    first = tiny_ldm.train_tiny_ldm(config, tmp_path / "a")
    second = tiny_ldm.train_tiny_ldm(config, tmp_path / "b")
    assert first == second
    a = (tmp_path / "a" / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    b = (tmp_path / "b" / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    assert a == b


def _world_words(n_scenes: int = 200) -> set[str]:
    """Every word the shape world's language produces: captions, phrases, all three referring styles, templates."""
    import numpy as np

    from demo.worlds import shapes
    from ldznet.data.phrasecut import PROMPT_TEMPLATES

    rng = np.random.default_rng(0)
    words: set[str] = set()
    for _ in range(n_scenes):
        scene = shapes.sample_scene(rng, 64)
        words.update(shapes.caption(scene).replace(",", " ").split())
        words.update(w for item in shapes.phrases(scene) for w in item["phrase"].split())
        for style in ("refcoco", "refcoco+", "refcocog"):
            for ref in shapes.referring_expressions(scene, rng, style):
                words.update(w for sentence in ref["sentences"] for w in sentence.split())
    for template in PROMPT_TEMPLATES:
        words.update(template.replace("{}", " ").replace(".", " ").split())
    return words


def test_every_world_word_is_one_token(tmp_path):
    """CLIP has one token for each of these words; the tiny tokenizer must too. Building each word's merges from
    single characters left "sand" as s + "and", "green" as g re e n, and "colored" (not in the vocabulary then)
    as c o l o + "red": a G-Ref-style "a blue colored circle" carried the token of another colour."""
    from ldznet.stable_diffusion import load_tokenizer
    from ldznet.tiny_configs import write_tiny_tokenizer

    tokenizer = load_tokenizer(write_tiny_tokenizer(tmp_path / "tokenizer", words=tiny_ldm.VOCABULARY))
    words = _world_words()
    assert words <= set(tiny_ldm.VOCABULARY), sorted(words - set(tiny_ldm.VOCABULARY))
    split = {word: tokenizer.tokenize(word) for word in sorted(words) if tokenizer.tokenize(word) != [word + "</w>"]}
    assert not split
    assert tokenizer.tokenize("a blue colored circle on the sand") == [
        "a</w>", "blue</w>", "colored</w>", "circle</w>", "on</w>", "the</w>", "sand</w>"]


def test_tiny_bpe_keeps_every_listed_word_whole_and_matches_clip_tokenizer():
    """`tiny_vocabulary`'s merges, applied with CLIP's rank rule (our `bpe_pieces` and transformers'
    CLIPTokenizer agree), give one piece per listed word, also for words that share letters with earlier ones."""
    from ldznet.tiny_configs import TINY_WORDS, bpe_pieces, tiny_vocabulary

    for words in (TINY_WORDS, tiny_ldm.VOCABULARY, ("an", "and", "sand", "re", "red", "colored", "green")):
        vocabulary, merges = tiny_vocabulary(words)
        ranks = {pair: rank for rank, pair in enumerate(merges)}
        assert len(vocabulary) == len(set(vocabulary))
        for word in words:
            assert bpe_pieces(word, ranks) == [word + "</w>"], word
    # a word outside the list still splits into known pieces (no whole-word token of its own)
    vocabulary, merges = tiny_vocabulary(("red",))
    assert bpe_pieces("bored", {pair: rank for rank, pair in enumerate(merges)}) == ["b", "o", "red</w>"]


def test_text_config_end_token_matches_tokenizer(tmp_path):
    """The text encoder's start/end ids come from the same word list as the tokenizer the demo writes."""
    from ldznet.stable_diffusion import load_tokenizer
    from ldznet.tiny_configs import write_tiny_tokenizer

    tokenizer = load_tokenizer(write_tiny_tokenizer(tmp_path / "tokenizer", words=tiny_ldm.VOCABULARY))
    text = tiny_ldm.architecture(OmegaConf.create(TINY))["text_encoder"]
    assert text["eos_token_id"] == tokenizer.eos_token_id and text["bos_token_id"] == tokenizer.bos_token_id
