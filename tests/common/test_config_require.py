"""`common.config.require` (issue 14 item 4): a value the code needs comes from the config, and a missing one is
an error naming the key (and the file) instead of a default written in code."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from common.config import MissingConfigKey, load_config, require


def test_require_returns_values_including_null_and_interpolations():
    cfg = OmegaConf.create({"sharingan": {"weights": {"gradient_penalty": 10.0}}, "data": {"val_list": None},
                            "model": {"image_size": 384, "side": "${model.image_size}", "blocks": [6, 7]}})
    assert require(cfg, "sharingan.weights.gradient_penalty") == 10.0
    assert require(cfg, "data.val_list") is None  # null is a value, not a missing key
    assert require(cfg, "model.side") == 384
    assert require(cfg, "model.blocks.1") == 7
    assert require({"optim": {"ema": False}}, "optim.ema") is False  # plain mappings too


@pytest.mark.parametrize("key", ["sharingan.weights.gradient_penalty", "sharingan.weights", "model.variant",
                                 "model.image_size.x", "nothing"])
def test_missing_key_is_an_error_naming_it_and_the_file(key):
    cfg = OmegaConf.create({"sharingan": {"steps": 1}, "model": {"variant": "???", "image_size": 384}})
    with pytest.raises(KeyError, match=rf"config key '{key}' is missing in experiments/x\.yaml"):
        require(cfg, key, "experiments/x.yaml")
    with pytest.raises(MissingConfigKey, match=rf"'{key}' is missing \(no default in code"):
        require(OmegaConf.to_container(cfg), key)


def test_the_shipped_bases_hold_the_values_the_code_requires():
    depth = load_config("experiments/chapter2/depth_base.yaml")
    faces = load_config("experiments/chapter2/faces_base.yaml")
    chapter3 = load_config("experiments/chapter3/base.yaml")
    # eq. 2.3: λ = 10 for both tasks, written once per task file (no copy in code)
    key = "sharingan.weights.gradient_penalty"
    assert require(depth, key) == require(faces, key) == 10.0
    assert list(require(chapter3, "model.ldm.blocks")) == [6, 7, 8, 9, 10]  # §3.2.2
