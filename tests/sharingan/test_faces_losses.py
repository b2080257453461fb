"""SfS supervision (Eq. 2.9) and the face overall loss (Eq. 2.10) against sums worked out by hand."""

from pathlib import Path

import pytest
import torch

from common.config import load_config
from sharingan.face_losses import SfSWeights, sfs_supervision
from sharingan.losses import SharinGANWeights
from sharingan.models.sfsnet import encode_normals, render

ROOT = Path(__file__).resolve().parents[2]
# Eq. 2.9's weights from their one source (the YAML); test_face_weights_... checks them against SfSNet's values
WEIGHTS = SfSWeights(**load_config(ROOT / "experiments" / "chapter2" / "faces_base.yaml").sfs_weights)


def consistent_target(batch=2, size=2):
    """Ground truth whose image is exactly shading * albedo (so a perfect prediction has zero loss)."""
    normals = torch.nn.functional.normalize(torch.randn(batch, 3, size, size), dim=1)
    target = {"normal": encode_normals(normals), "albedo": torch.rand(batch, 3, size, size),
              "lighting": torch.randn(batch, 27) * 0.3, "mask": torch.ones(batch, 1, size, size)}
    _, image = render(target["normal"], target["albedo"], target["lighting"])
    return target, image


def test_perfect_prediction_gives_zero_loss():
    target, image = consistent_target()
    prediction = {k: target[k].clone() for k in ("normal", "albedo", "lighting")}
    terms = sfs_supervision(prediction, target, image, WEIGHTS)
    for name in ("normal", "albedo", "lighting", "reconstruction", "total"):
        assert terms[name].item() == pytest.approx(0.0, abs=1e-5), name


def test_sums_over_pixels_mean_over_batch_and_weights():
    target, image = consistent_target(batch=2, size=2)
    target["mask"][:, :, 0, 0] = 0.0  # 3 valid pixels of 4 in each image
    prediction = {"normal": target["normal"] + 0.1, "albedo": target["albedo"] - 0.2,
                  "lighting": target["lighting"] + 0.2}
    terms = sfs_supervision(prediction, target, image, WEIGHTS)
    # normal: 2 images x 3 channels x 3 pixels x 0.1 / 2 images = 0.9; albedo: same with 0.2 -> 1.8
    assert terms["normal"].item() == pytest.approx(0.9, rel=1e-5)
    assert terms["albedo"].item() == pytest.approx(1.8, rel=1e-5)
    # lighting: 2 x 27 x 0.04 / (2 x 2) = 0.54
    assert terms["lighting"].item() == pytest.approx(0.54, rel=1e-5)
    # reconstruction by a second route: masked L1 of (predicted shading x predicted albedo) vs image
    _, reconstruction = render(prediction["normal"], prediction["albedo"], prediction["lighting"])
    expected = ((reconstruction - image).abs() * target["mask"]).sum() / 2
    assert terms["reconstruction"].item() == pytest.approx(expected.item(), rel=1e-5)
    total = 0.5 * 0.9 + 0.5 * 1.8 + 0.1 * 0.54 + 0.5 * expected.item()
    assert terms["total"].item() == pytest.approx(total, rel=1e-5)
    custom = sfs_supervision(prediction, target, image, SfSWeights(1.0, 0.0, 0.0, 0.0))
    assert custom["total"].item() == pytest.approx(0.9, rel=1e-5)


def test_mask_excludes_pixels_and_reconstruction_uses_the_given_image():
    target, image = consistent_target(batch=1, size=2)
    prediction = {k: target[k].clone() for k in ("normal", "albedo", "lighting")}
    other_image = image.clone()
    other_image[:, :, 1, 1] += 0.5
    terms = sfs_supervision(prediction, target, other_image, WEIGHTS)
    assert terms["reconstruction"].item() == pytest.approx(1.5, rel=1e-5)
    target["mask"][:, :, 1, 1] = 0.0
    terms = sfs_supervision(prediction, target, other_image, WEIGHTS)
    assert terms["reconstruction"].item() == pytest.approx(0, abs=1e-6)


def test_shape_mismatch_names_the_key():
    target, image = consistent_target()
    prediction = {k: target[k].clone() for k in ("normal", "albedo", "lighting")}
    prediction["lighting"] = prediction["lighting"][:, :9]
    with pytest.raises(ValueError, match="predicted lighting"):
        sfs_supervision(prediction, target, image, WEIGHTS)


def test_face_weights_are_alpha_1_10_0_1_and_the_configs_agree():
    cfg = load_config(ROOT / "experiments" / "chapter2" / "faces_sharingan.yaml")
    # Eq. 2.10 for faces: α = (1, 10, 0.1); λ = 10 for the critic's gradient penalty (eq. 2.3)
    assert SharinGANWeights(**cfg.sharingan.weights) == SharinGANWeights(adversarial=1.0, reconstruction=10.0,
                                                                         task=0.1, gradient_penalty=10.0)
    assert SfSWeights(**cfg.sfs_weights) == SfSWeights(0.5, 0.5, 0.1, 0.5)
    assert dict(cfg.sharingan.steps) == {"critic": 5, "generator": 3, "task": 1}
    assert cfg.data.batch_size == 16 and cfg.schedule.train_iterations == 120000
    assert {cfg.optim.effective[name].lr for name in ("generator", "critic", "task_network")} == {1e-4}


def test_a_missing_sfs_weight_is_named():
    from omegaconf import OmegaConf

    from common.config import MissingConfigKey
    from sharingan.tasks.normals import build_task_loss

    cfg = load_config(ROOT / "experiments" / "chapter2" / "faces_sharingan.yaml")
    assert build_task_loss(cfg).weights == SfSWeights(**cfg.sfs_weights)
    plain = OmegaConf.to_container(cfg, resolve=False)
    del plain["sfs_weights"]["lighting"]
    with pytest.raises(MissingConfigKey, match=r"'sfs_weights\.lighting'.*faces_base\.yaml"):
        build_task_loss(OmegaConf.create(plain))
    with pytest.raises(TypeError):  # no defaults in code
        SfSWeights()
