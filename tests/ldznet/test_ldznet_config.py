"""Issue 14 item 4: Chapter 3's model / optimiser values live only in experiments/chapter3/base.yaml; code requires
them, so a key missing from a composed config is an error naming it (never hidden by a default in code)."""

import pytest
import torch
from omegaconf import OmegaConf

from common.checkpoints import save_torch
from common.config import MissingConfigKey, load_config
from ldznet.checkpoints import FORMAT, load_segmenter
from ldznet.config import model_defaults, optim_defaults
from ldznet.lit_module import OPTIM_KEYS, SegmenterLitModule, training_plan
from ldznet.models import MODEL_KEYS, build_segmenter, model_options
from ldznet.models.ldm_features import LDMFeatures
from ldznet.models.ldznet import LDZNet
from ldznet.stable_diffusion import build_random_components

CONFIG = "experiments/chapter3/ldznet.yaml"


def _without(cfg, dotted: str) -> dict:
    """The resolved container of `cfg` with the key `dotted` removed."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    *parents, last = dotted.split(".")
    node = plain
    for part in parents:
        node = node[part]
    del node[last]
    return plain


def test_defaults_are_the_base_yaml_nodes():
    base = OmegaConf.load("experiments/chapter3/base.yaml")  # the file itself, read without the loader
    model = model_defaults(variant="znet")
    assert model["variant"] == "znet" and "stable_diffusion" not in model
    assert model["ldm"] == {"blocks": [6, 7, 8, 9, 10], "train_timesteps": [300, 500], "eval_timestep": 400}
    assert {key: model[key] for key in ("image_size", "latent", "gradient_checkpointing", "eval_seed")} == {
        key: base.model[key] for key in ("image_size", "latent", "gradient_checkpointing", "eval_seed")}
    assert {key.split(".")[0] for key in MODEL_KEYS} == set(model)
    assert set(OPTIM_KEYS) == set(optim_defaults())
    assert optim_defaults(ema=False)["ema"] is False and optim_defaults()["batch_size"] == 4  # data.batch_size
    assert model_defaults(variant="ldznet", ldm={"eval_timestep": 200})["ldm"]["train_timesteps"] == [300, 500]
    with pytest.raises(KeyError, match="imagesize"):
        model_defaults(imagesize=3)
    with pytest.raises(MissingConfigKey, match="'model.variant'"):  # `???` in base.yaml
        model_options(model_defaults())


@pytest.mark.parametrize("key", ["ldm.eval_timestep", "ldm.train_timesteps", "image_size", "gradient_checkpointing"])
def test_a_model_key_missing_from_a_composed_config_is_named(key):
    model = _without(load_config(CONFIG).model, key)
    with pytest.raises(MissingConfigKey, match=rf"'model\.{key}'.*experiments/chapter3/base.yaml"):
        model_options(model)
    with torch.device("meta"), pytest.raises(MissingConfigKey, match=rf"'model\.{key}'"):
        build_segmenter(model, build_random_components("tiny"))


@pytest.mark.parametrize("key", ["ema_decay", "reference_global_batch", "base_learning_rate"])
def test_an_optim_key_missing_from_a_composed_config_is_named(key):
    cfg = load_config(CONFIG)
    optim = _without(cfg.optim, key)
    with pytest.raises(MissingConfigKey, match=rf"'optim\.{key}'"):
        training_plan(optim, 4, 1, 1, train_samples=100)
    model = OmegaConf.to_container(cfg.model, resolve=True)
    with pytest.raises(MissingConfigKey, match=rf"'optim\.{key}'"):  # raised before any weights are built
        SegmenterLitModule(model, optim)


def test_a_checkpoint_without_a_model_option_is_named(tmp_path):
    model = model_defaults(variant="znet", image_size=64)
    del model["ldm"]["eval_timestep"]
    path = tmp_path / "segmenter.pt"
    save_torch({"format": FORMAT, "variant": "znet", "task": "phrasecut", "model": model,
                "stable_diffusion_record": {}, "state_dict": {}, "ema_state_dict": None, "extra": {}}, path)
    with pytest.raises(MissingConfigKey, match=rf"'model\.ldm\.eval_timestep'.*{path}"):
        load_segmenter(path)


def test_ldm_timesteps_and_image_size_have_no_code_default():
    with torch.device("meta"):
        components = build_random_components("tiny")
    with pytest.raises(TypeError, match="image_size|train_timesteps|eval_timestep"):
        LDZNet(components, blocks=[6])
    with pytest.raises(ValueError, match="both train_timesteps and eval_timestep"):
        LDMFeatures(components.unet, components.scheduler, [6], train_timesteps=(300, 500), eval_timestep=None)
    probe = LDMFeatures(components.unet, components.scheduler, [6], train_timesteps=None, eval_timestep=None)
    with pytest.raises(ValueError, match="pass timesteps and noise"):
        probe.sample_timesteps_and_noise(torch.zeros(1, 4, 8, 8))
