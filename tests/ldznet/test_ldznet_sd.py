"""Stable Diffusion loading (issue item 1): diffusers folder, single original checkpoint, errors, scheduler."""

import hashlib
import shutil

import numpy as np
import pytest
import torch

from common.testing import write_tiny_stable_diffusion
from ldznet.models.text_conditioning import FrozenTextConditioning
from ldznet.stable_diffusion import load_stable_diffusion, make_scheduler
from tests.helpers.stable_diffusion_checkpoints import unet_key_to_original, write_original_checkpoint


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    return write_tiny_stable_diffusion(tmp_path_factory.mktemp("sd") / "tiny_sd", seed=3)


@pytest.fixture(scope="module")
def loaded(tiny_sd):
    return load_stable_diffusion(tiny_sd)


def test_folder_load_records_sha256_of_the_files_read(tiny_sd, loaded):
    record = loaded.record
    assert record["format"] == "diffusers"
    weights = tiny_sd / "unet" / "diffusion_pytorch_model.safetensors"
    expected = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert record["sha256"]["unet/diffusion_pytorch_model.safetensors"] == expected
    assert {"vae/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors", "tokenizer/vocab.json",
            "tokenizer/merges.txt"} <= set(record["sha256"])
    # the tiny UNet keeps SD v1's block layout
    assert loaded.unet.config.layers_per_block == 2 and len(loaded.unet.down_blocks) == 4
    assert loaded.vae.config.scaling_factor == pytest.approx(0.18215)


def test_scheduler_is_sds_scaled_linear_schedule():
    scheduler = make_scheduler()
    assert scheduler.config.num_train_timesteps == 1000
    assert scheduler.config.beta_schedule == "scaled_linear"
    # independent computation: betas = linspace(sqrt(0.00085), sqrt(0.012), 1000)^2
    betas = np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000) ** 2
    alphas_cumprod = np.cumprod(1 - betas)
    assert np.allclose(scheduler.alphas_cumprod.numpy(), alphas_cumprod, atol=1e-6)
    assert alphas_cumprod[400] == pytest.approx(0.42448, abs=1e-4)  # docs/ref-ldznet.md §2.3


@pytest.mark.parametrize("suffix", [".ckpt", ".safetensors"])
def test_single_original_checkpoint_gives_the_same_weights(tiny_sd, loaded, tmp_path, suffix):
    path = write_original_checkpoint(loaded, tmp_path / f"sd-v1-tiny{suffix}")
    single = load_stable_diffusion(path, architecture="tiny", tokenizer_path=tiny_sd / "tokenizer")
    assert single.record["format"] == "single_file"
    assert single.record["sha256"][path.name] == hashlib.sha256(path.read_bytes()).hexdigest()
    for name in ("unet", "vae", "text_encoder"):
        expected, got = getattr(loaded, name).state_dict(), getattr(single, name).state_dict()
        assert set(expected) == set(got)
        assert all(torch.equal(expected[key], got[key]) for key in expected), name


def test_single_checkpoint_in_the_legacy_torch_format(tiny_sd, loaded, tmp_path):
    zipped = write_original_checkpoint(loaded, tmp_path / "zipped.ckpt")
    legacy = tmp_path / "legacy.ckpt"
    torch.save(torch.load(zipped, weights_only=True), legacy, _use_new_zipfile_serialization=False)
    single = load_stable_diffusion(legacy, architecture="tiny", tokenizer_path=tiny_sd / "tokenizer")
    expected = loaded.unet.state_dict()
    assert all(torch.equal(value, single.unet.state_dict()[key]) for key, value in expected.items())


def test_compvis_key_names_follow_the_sd_v1_layout():
    # facts of the CompVis SD v1 UNet (docs/ref-ldznet.md §2.1 table)
    assert unet_key_to_original("down_blocks.2.attentions.1.proj_in.weight") == \
        "model.diffusion_model.input_blocks.8.1.proj_in.weight"
    assert unet_key_to_original("mid_block.attentions.0.norm.bias") == "model.diffusion_model.middle_block.1.norm.bias"
    assert unet_key_to_original("up_blocks.1.attentions.2.proj_out.bias") == \
        "model.diffusion_model.output_blocks.5.1.proj_out.bias"
    assert unet_key_to_original("up_blocks.0.upsamplers.0.conv.weight") == \
        "model.diffusion_model.output_blocks.2.1.conv.weight"
    assert unet_key_to_original("up_blocks.1.upsamplers.0.conv.weight") == \
        "model.diffusion_model.output_blocks.5.2.conv.weight"
    assert unet_key_to_original("down_blocks.0.downsamplers.0.conv.bias") == \
        "model.diffusion_model.input_blocks.3.0.op.bias"
    assert unet_key_to_original("down_blocks.1.resnets.0.conv_shortcut.weight") == \
        "model.diffusion_model.input_blocks.4.0.skip_connection.weight"


def test_missing_or_incomplete_paths_raise_clear_errors(tiny_sd, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_stable_diffusion(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="not set"):
        load_stable_diffusion(None)
    broken = tmp_path / "broken"
    shutil.copytree(tiny_sd, broken)
    (broken / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    (broken / "tokenizer" / "merges.txt").unlink()
    with pytest.raises(FileNotFoundError) as error:
        load_stable_diffusion(broken)
    assert "unet" in str(error.value) and "merges.txt" in str(error.value)
    with pytest.raises(ValueError, match="tokenizer_path"):
        load_stable_diffusion(tiny_sd / "unet" / "diffusion_pytorch_model.safetensors", architecture="tiny")


def test_text_conditioning_77_tokens_empty_and_long_prompts(loaded, caplog):
    text = FrozenTextConditioning(loaded.tokenizer, loaded.text_encoder)
    ids = text.tokenize(["a photo of a cat", ""])
    assert ids.shape == (2, 77)
    start, end = loaded.tokenizer.bos_token_id, loaded.tokenizer.eos_token_id
    assert ids[1, 0] == start and (ids[1, 1:] == end).all()  # empty prompt: start, end, end padding
    long_prompt = " ".join(["cat"] * 120)
    with caplog.at_level("WARNING"):
        long_ids = text.tokenize([long_prompt])
    assert long_ids.shape == (1, 77) and long_ids[0, -1] == end and "truncated" in caplog.text
    states = text(["a photo of a cat", ""])
    assert states.shape == (2, 77, loaded.text_encoder.config.hidden_size) and not states.requires_grad
    with pytest.raises(TypeError):
        text("a bare string")
