"""Analyses (issue item 7): Fig 3.1 coarse masks and the Fig 3.4 block x timestep probe, on a tiny SD."""

import json

import h5py
import numpy as np
import pytest
import torch

from common.config import load_config
from common.testing import write_tiny_stable_diffusion
from ldznet.analysis.coarse_masks import coarse_mask
from ldznet.analysis.coarse_masks import main as coarse_masks_main
from ldznet.analysis.probe import run_probe
from ldznet.data.transforms import write_image
from ldznet.stable_diffusion import load_stable_diffusion
from tests.helpers.toy_phrasecut import write_toy_phrasecut


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    return {"sd": write_tiny_stable_diffusion(root / "tiny_sd", seed=4),
            "phrasecut": write_toy_phrasecut(root / "VGPhraseCut_v0", samples_per_split=4, size=64)}


def test_coarse_mask_is_the_norm_of_the_text_effect(world):
    components = load_stable_diffusion(world["sd"], hash_files=False)
    images = torch.rand(2, 3, 64, 128, generator=torch.Generator().manual_seed(0)) * 2 - 1
    heat = coarse_mask(components, images, ["a photo of a red square", "astronaut"], timestep=400, seed=0)
    assert heat.shape == (2, 8, 16) and (heat > 0).all()
    # the empty prompt is the unconditional one: no text effect at all (same z_t in both passes)
    assert torch.equal(coarse_mask(components, images[:1], [""], timestep=400, seed=0), torch.zeros(1, 8, 16))
    # independent recomputation of the definition
    z = components.vae.encode(images[:1]).latent_dist.mean * 0.18215
    noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([400])
    alpha_bar = components.scheduler.alphas_cumprod[400]
    noisy = alpha_bar.sqrt() * z + (1 - alpha_bar).sqrt() * noise
    tokenizer = components.tokenizer

    def eps(prompt):
        ids = tokenizer([prompt], padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        states = components.text_encoder(ids).last_hidden_state
        return components.unet(noisy, t, encoder_hidden_states=states).sample

    with torch.no_grad():
        expected = torch.sqrt(((eps("a photo of a red square") - eps("")) ** 2).sum(1))
    assert torch.allclose(heat[:1], expected, atol=1e-5)


def test_coarse_masks_command_writes_overlays(world, tmp_path):
    image = np.random.default_rng(0).integers(0, 255, size=(48, 80, 3), dtype=np.uint8)
    write_image(tmp_path / "images" / "scene.png", image)
    coarse_masks_main(["--stable-diffusion", str(world["sd"]), "--image", str(tmp_path / "images"),
                       "--prompt", "red square", "--out", str(tmp_path / "out"), "--image-size", "64",
                       "--device", "cpu"])
    names = sorted(path.name for path in (tmp_path / "out").iterdir())
    assert names == ["scene__red_square_heat.png", "scene__red_square_mask_overlay.png",
                     "scene__red_square_overlay.png"]


def test_probe_writes_heat_map_and_caches_features(world, tmp_path):
    overrides = [f"out={tmp_path / 'probe'}", f"stable_diffusion.path={world['sd']}",
                 "stable_diffusion.architecture=tiny",
                 f"data.train.root={world['phrasecut']}", f"data.val.root={world['phrasecut']}", "image_size=64",
                 "train_samples=4", "val_samples=3", "mask_size=16", "num_workers=0", "batch_size=2", "device=cpu",
                 "timesteps=[300,999]", "blocks=[6,7,14]", "decoder.epochs=2", "decoder.hidden_channels=8"]
    cfg = load_config("experiments/chapter3/probe.yaml", overrides)
    result = run_probe(cfg)
    out = tmp_path / "probe"
    assert (out / "probe_ap.png").read_bytes()[:4] == b"\x89PNG"
    assert set(result["ap"]) == {"block6", "block7", "block14"}
    assert set(result["ap"]["block6"]) == {"t=300", "t=999"}
    assert all(0.0 <= ap <= 100.0 for row in result["ap"].values() for ap in row.values())
    table = json.loads((out / "probe_ap.json").read_text())
    assert [row["method"] for row in table["ours"]] == ["block 6", "block 7", "block 14"]
    with h5py.File(out / "features_train.h5", "r") as file:
        assert file["t300/block6"].shape == (4, 64, 2, 2)      # latent 8 -> block 6 at /4
        assert file["t999/block7"].shape == (4, 64, 1, 1)      # middle block at /8
        assert file["t300/block14"].shape == (4, 32, 8, 8)     # last decoder level, full latent size
        assert file["masks"].shape == (4, 1, 16, 16)
        different_t = not np.array_equal(file["t300/block6"][...], file["t999/block6"][...])
    assert different_t
    stamp = (out / "features_train.h5").stat().st_mtime_ns
    run_probe(cfg)  # same settings: the cached features are reused, not rewritten
    assert (out / "features_train.h5").stat().st_mtime_ns == stamp
