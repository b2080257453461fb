"""ldznet.eval with fake models whose scores are worked out by hand (CLIPSeg protocol, ldznet.md §3.3)."""

import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from scipy.integrate import simpson
from torch import nn
from torch.utils.data import DataLoader

import ldznet.eval as ldz_eval
from ldznet.data import build_dataset
from ldznet.data.phrasecut import write_phrasecut_split
from ldznet.eval import evaluate_segmenter, main, write_comparison_tables


class FromImage(nn.Module):
    """Logits = scale * image channel 0 (+ bias): the fixtures write the answer into channel 0."""

    def __init__(self, scale=10.0, bias=0.0, out_size=None, channels=1):
        super().__init__()
        self.scale, self.bias, self.out_size, self.channels = scale, bias, out_size, channels
        self.seen_prompts = []

    def forward(self, images, prompts):
        self.seen_prompts.extend(prompts)
        logits = self.scale * images[:, :1] + self.bias
        if self.out_size is not None:
            logits = nn.functional.interpolate(logits, size=self.out_size, mode="nearest")
        return logits.repeat(1, self.channels, 1, 1)


def _sample(mask, index, prompt="thing"):
    mask = torch.as_tensor(mask, dtype=torch.float32)
    image = torch.stack([2 * mask - 1, torch.zeros_like(mask), torch.zeros_like(mask)])
    return {
        "image": image,
        "mask": mask[None],
        "prompt": prompt,
        "sample_index": index,
        "image_id": str(index),
    }


def _two_samples():
    first = np.zeros((4, 4))
    first[:2, :2] = 1  # area 4
    second = np.zeros((4, 4))
    second[:, 2:] = 1  # area 8
    return [_sample(first, 0), _sample(second, 1)]


def _loader(samples, batch_size=2):
    return DataLoader(samples, batch_size=batch_size, shuffle=False)


def test_oracle_scores_by_hand():
    metrics = evaluate_segmenter(FromImage(10.0), _loader(_two_samples()), progress=False)
    # Per-sample IoU tp / (1 + tp + fp + fn) with tp = area, fp = fn = 0 at every threshold.
    miou = 100 * (4 / 5 + 8 / 9) / 2
    fgiou = 100 * 12 / 13
    assert metrics["miou_best"] == pytest.approx(miou) and metrics["miou_0.3"] == pytest.approx(miou)
    assert metrics["fgiou_best"] == pytest.approx(fgiou) and metrics["fgiou_0.3"] == pytest.approx(fgiou)
    assert metrics["sample_count"] == 2


def test_all_negative_model_scores_zero():
    metrics = evaluate_segmenter(FromImage(0.0, bias=-10.0), _loader(_two_samples()), progress=False)
    for key in ("miou_best", "fgiou_best", "miou_0.3", "fgiou_0.3", "ap"):
        assert metrics[key] == 0.0


def test_constant_half_probability():
    # p = 0.5 everywhere: foreground at every t < 0.5 (incl. 0.3), nothing at t >= 0.5.
    metrics = evaluate_segmenter(
        FromImage(0.0, bias=0.0), _loader(_two_samples(), batch_size=1), progress=False
    )
    assert metrics["miou_0.3"] == pytest.approx(100 * (4 / 17 + 8 / 17) / 2)  # = 6/17
    assert metrics["fgiou_0.3"] == pytest.approx(100 * 12 / 33)
    assert metrics["miou_best"] == pytest.approx(100 * 6 / 17)
    assert metrics["miou_0.5"] == 0.0 and metrics["fgiou_0.5"] == 0.0


def test_low_resolution_logits_are_resized_to_the_ground_truth():
    mask = np.zeros((8, 8))
    mask[:, :4] = 1
    samples = [_sample(mask, 0)]
    # The model sees only a 4x4 answer; bilinear upsampling gives p ~ 0.75 / 0.25 on the two border
    # columns, so t = 0.3 recovers the mask exactly: IoU = 32 / 33.
    model = FromImage(10.0, out_size=(4, 4))
    metrics = evaluate_segmenter(model, _loader(samples), progress=False)
    assert metrics["miou_0.3"] == pytest.approx(100 * 32 / 33)
    assert metrics["fgiou_best"] == pytest.approx(100 * 32 / 33)


def test_average_precision_against_a_brute_force_sweep():
    rng = np.random.default_rng(0)
    samples, probs = [], []
    for index in range(3):
        mask = (rng.random((6, 6)) > 0.6).astype(np.float32)
        noise = rng.normal(0.0, 0.6, size=(6, 6))
        logit = 2.0 * (2 * mask - 1) + noise
        image = torch.zeros(3, 6, 6)
        image[0] = torch.as_tensor(logit / 4.0)  # FromImage(4.0) gives the logit back
        samples.append(
            {
                "image": image,
                "mask": torch.as_tensor(mask)[None],
                "prompt": "p",
                "sample_index": index,
                "image_id": str(index),
            }
        )
        probs.append((1 / (1 + np.exp(-image[0].double().numpy() * 4.0)), mask > 0))
    metrics = evaluate_segmenter(FromImage(4.0), _loader(samples), progress=False)
    pairs = set()
    for t in np.linspace(0, 1, 51)[1:-1]:
        tp = sum(((p > t) & g).sum() for p, g in probs)
        fp = sum(((p > t) & ~g).sum() for p, g in probs)
        fn = sum((~(p > t) & g).sum() for p, g in probs)
        if tp + fp > 0:
            pairs.add((tp / (1 + tp + fn), tp / (1 + tp + fp)))
    recall, precision = np.array(sorted(pairs)).T
    assert metrics["ap"] == pytest.approx(100 * simpson(precision, x=recall), abs=1e-9)
    assert 0 < metrics["ap"] <= 100


def test_bad_model_outputs_and_prompts_raise():
    with pytest.raises(ValueError, match=r"logits \(B, 1, H, W\).*\(2, 2, 4, 4\)"):
        evaluate_segmenter(FromImage(channels=2), _loader(_two_samples()), progress=False)
    with pytest.raises(ValueError, match="non-finite"):
        evaluate_segmenter(FromImage(float("nan")), _loader(_two_samples()), progress=False)
    samples = _two_samples()
    samples[1]["prompt"] = ""
    with pytest.raises(ValueError, match="sample 1: empty prompt"):
        evaluate_segmenter(FromImage(), _loader(samples), progress=False)


def test_training_mode_is_restored():
    model = FromImage()
    model.train()
    evaluate_segmenter(model, _loader(_two_samples()), progress=False)
    assert model.training


def _phrasecut_root(tmp_path):
    rng = np.random.default_rng(0)
    samples = []
    for k in range(3):
        image = rng.integers(0, 256, size=(24, 32, 3), dtype=np.uint8)
        rect = [[2 + k, 3], [12 + k, 3], [12 + k, 15], [2 + k, 15]]
        samples.append(
            {
                "image_id": 100 + k,
                "image": image,
                "phrases": [
                    {"phrase": f"object {k}", "instances": [[rect]]},
                    {"phrase": "sky", "instances": [[[[0, 0], [31, 0], [31, 2]]]]},
                ],
            }
        )
    return write_phrasecut_split(tmp_path / "VGPhraseCut_v0", "test", samples)


def test_cli_writes_metrics_and_tables(tmp_path, monkeypatch):
    root = _phrasecut_root(tmp_path)
    model = FromImage(3.0)
    monkeypatch.setattr(ldz_eval, "_load_model", lambda checkpoint, device: model)
    out = tmp_path / "eval"
    assert (
        main(
            [
                "--checkpoint",
                "fake.ckpt",
                "--dataset",
                "phrasecut",
                "--data-root",
                str(root),
                "--split",
                "test",
                "--prompt-mode",
                "template",
                "--limit",
                "5",
                "--image-size",
                "32",
                "--out",
                str(out),
                "--method",
                "LD-ZNet (ours)",
                "--batch-size",
                "2",
            ]
        )
        == 0
    )
    result = json.loads((out / "metrics.json").read_text())
    protocol = result["protocol"]
    assert protocol["dataset"] == "phrasecut" and protocol["split"] == "test" and protocol["image_size"] == 32
    assert protocol["prompt_mode"] == "template" and protocol["sample_count"] == 5
    assert protocol["threshold_count"] == 49 and protocol["crop"] is False
    assert model.seen_prompts[:2] == ["a photo of a object 0.", "a photo of a sky."]
    # A second path to the same numbers: build the dataset directly and evaluate it.
    node = {
        "name": "phrasecut",
        "root": str(root),
        "split": "test",
        "image_size": 32,
        "crop": False,
        "prompt_mode": "template",
        "limit": 5,
    }
    direct = evaluate_segmenter(FromImage(3.0), DataLoader(build_dataset(node), batch_size=3), progress=False)
    for key in ("miou_best", "fgiou_best", "ap", "miou_0.3", "fgiou_0.3"):
        assert result["metrics"][key] == pytest.approx(direct[key])
    table = (out / "table_3_1.md").read_text()
    assert "| LD-ZNet | paper | 52.7 | 60.0 | 78.9 | best |" in table
    assert f"| LD-ZNet (ours) | ours | {result['metrics']['miou_0.3']:.1f} |" in table
    assert (out / "table_3_4.md").is_file() and (out / "table_3_1.json").is_file()
    assert not (out / "table_3_2.md").exists()


def test_cli_from_a_config_file_with_overrides(tmp_path, monkeypatch):
    root = _phrasecut_root(tmp_path)
    monkeypatch.setattr(ldz_eval, "_load_model", lambda checkpoint, device: FromImage(3.0))
    monkeypatch.setenv("LDZNET_PHRASECUT_ROOT", str(root))
    config = tmp_path / "eval.yaml"
    config.write_text(
        "defaults: [/chapter3/data/phrasecut_test]\ncheckpoint: fake.ckpt\n"
        f"out: {tmp_path / 'out'}\nbatch_size: 3\n"
    )
    assert main(["--config", str(config), "data.test.image_size=16", "limit=4", "progress=false"]) == 0
    result = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert result["protocol"]["image_size"] == 16 and result["protocol"]["sample_count"] == 4
    assert result["data_root"] == str(root) and result["method"] == "fake"
    with pytest.raises(KeyError, match="unknown config key 'batchsize'"):
        main(["--config", str(config), "batchsize=2"])


def test_comparison_table_for_several_methods(tmp_path):
    metrics = {"miou_best": 50.0, "fgiou_best": 60.0, "ap": 70.0, "miou_0.3": 40.0, "fgiou_0.3": 55.0}
    paths = write_comparison_tables(
        tmp_path, "refcocog", {"ZNet": metrics, "LD-ZNet": metrics}, protocol={"split": "val"}
    )
    assert [p.name for p in paths] == ["table_3_3_refcocog.md"]
    data = json.loads((tmp_path / "table_3_3_refcocog.json").read_text())
    assert len(data["ours"]) == 4 and data["ours"][1] == {
        "method": "ZNet",
        "threshold": "0.3",
        "mIoU": 40.0,
        "IoU_FG": 55.0,
        "AP": 70.0,
    }
    assert data["paper"][-1]["mIoU"] == 47.8 and data["paper"][-1]["AP"] == 30.8


def test_every_paper_table_is_well_formed():
    tables = OmegaConf.load(ldz_eval.PAPER_TABLES)
    assert set(tables) == {
        "table_3_1",
        "table_3_2",
        "table_3_3_refcoco",
        "table_3_3_refcoco_plus",
        "table_3_3_refcocog",
        "table_3_4",
    }
    for key, table in tables.items():
        assert set(table.metrics) == set(table.columns), key
        assert set(table.metrics.values()) <= {"miou", "fgiou", "ap"}, key
        for row in table.rows:
            assert set(row) == {"method", "threshold", *table.columns}, (key, row)


@pytest.mark.parametrize("dataset", ["aigi", "refcoco+"])
def test_cli_on_aigi_and_refcoco(tmp_path, monkeypatch, dataset):
    from ldznet.data.aigi import write_aigi_sample
    from ldznet.data.refcoco import write_refer_dataset

    image = np.random.default_rng(1).integers(0, 256, size=(12, 20, 3), dtype=np.uint8)
    mask = np.zeros((12, 20), np.uint8)
    mask[2:6, 4:12] = 1
    root = tmp_path / "data"
    if dataset == "aigi":
        write_aigi_sample(root, "img", image, [("Cat", mask), ("Dog", 1 - mask)])
        expected_tables = ["table_3_2.md"]
    else:
        write_refer_dataset(
            root,
            "refcoco+",
            [
                {
                    "image_id": 5,
                    "image": image,
                    "objects": [
                        {"ann_id": 9, "split": "testB", "sentences": ["left cat", "small cat"], "mask": mask}
                    ],
                }
            ],
        )
        expected_tables = ["table_3_3_refcoco_plus.md"]
    monkeypatch.setattr(ldz_eval, "_load_model", lambda checkpoint, device: FromImage(3.0))
    out = tmp_path / "out"
    split = "test" if dataset == "aigi" else "testB"
    assert (
        main(
            [
                "--checkpoint",
                "m.ckpt",
                "--dataset",
                dataset,
                "--data-root",
                str(root),
                "--split",
                split,
                "--image-size",
                "16",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    result = json.loads((out / "metrics.json").read_text())
    assert result["protocol"]["sample_count"] == 2 and result["protocol"]["split"] == split
    assert sorted(p.name for p in out.glob("table_*.md")) == expected_tables
    assert (out / "config.yaml").is_file() and "torch" in json.loads((out / "env.json").read_text())[
        "packages"
    ]
    if dataset == "refcoco+":
        assert result["protocol"]["split_by"] == "unc" and result["protocol"]["text_key"] == "sent"


@pytest.mark.slow
def test_cli_with_a_real_tiny_ldznet_checkpoint(tmp_path):
    """Integration with the models part: a tiny LD-ZNet written by ldznet.checkpoints, run by the CLI."""
    from common.testing import write_tiny_stable_diffusion
    from ldznet.checkpoints import save_segmenter
    from ldznet.config import model_defaults
    from ldznet.models import build_segmenter
    from ldznet.stable_diffusion import components_from_config

    sd = write_tiny_stable_diffusion(tmp_path / "tiny_sd")
    model_cfg = model_defaults(variant="ldznet", image_size=64, gradient_checkpointing=False,
                               stable_diffusion={"path": str(sd)})
    components = components_from_config(model_cfg["stable_diffusion"])
    save_segmenter(
        build_segmenter(model_cfg, components),
        tmp_path / "ldznet.pt",
        model_cfg,
        stable_diffusion_record=components.record,
    )
    root = _phrasecut_root(tmp_path)
    out = tmp_path / "eval"
    assert (
        main(
            [
                "--checkpoint",
                str(tmp_path / "ldznet.pt"),
                "--dataset",
                "phrasecut",
                "--data-root",
                str(root),
                "--image-size",
                "64",
                "--limit",
                "4",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    result = json.loads((out / "metrics.json").read_text())
    assert result["method"] == "ldznet" and result["protocol"]["sample_count"] == 4
    assert 0.0 <= result["metrics"]["miou_best"] <= 100.0
    # Evaluation is seeded: a second run gives the same numbers.
    assert (
        main(
            [
                "--checkpoint",
                str(tmp_path / "ldznet.pt"),
                "--dataset",
                "phrasecut",
                "--data-root",
                str(root),
                "--image-size",
                "64",
                "--limit",
                "4",
                "--out",
                str(tmp_path / "again"),
            ]
        )
        == 0
    )
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert again["metrics"] == result["metrics"]
