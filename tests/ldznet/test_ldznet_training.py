"""Training (issue item 5): lr scaling, EMA, checkpoints, a tiny Lightning run with TensorBoard overlays."""

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from common.checkpoints import load_torch
from common.config import load_config
from common.testing import write_tiny_stable_diffusion
from ldznet.checkpoints import load_segmenter, save_segmenter
from ldznet.config import model_defaults, optim_defaults
from ldznet.lit_module import SegmenterLitModule, TrainableEMA, scaled_learning_rate
from ldznet.models import build_segmenter
from ldznet.models.znet import OutputHead, initialise_head
from ldznet.stable_diffusion import load_stable_diffusion
from ldznet.train import train
from tests.helpers.toy_phrasecut import write_toy_phrasecut


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    return {"sd": write_tiny_stable_diffusion(root / "tiny_sd", seed=2),
            "phrasecut": write_toy_phrasecut(root / "VGPhraseCut_v0", samples_per_split=4, size=64)}


def test_learning_rate_is_base_times_batch_devices_accumulation():
    assert scaled_learning_rate(5e-7, 4, 8, 1) == pytest.approx(1.6e-5)  # the paper's 8 x A100, batch 4
    assert scaled_learning_rate(5e-7, 2, 1, 3) == pytest.approx(3e-6)


def test_optimiser_and_plateau_schedule(world):
    components = load_stable_diffusion(world["sd"], hash_files=False)
    module = SegmenterLitModule(model_defaults(variant="znet", image_size=64, gradient_checkpointing=False),
                                optim_defaults(base_learning_rate=5e-7, batch_size=4, head_learning_rate_scale=10.0),
                                components=components)
    configured = module.configure_optimizers()
    optimizer, scheduler = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["weight_decay"] == 0.01
    assert [group["lr"] for group in optimizer.param_groups] == pytest.approx([2e-6, 2e-5])
    assert sum(p.numel() for p in optimizer.param_groups[1]["params"]) == 55  # the head
    trainable = sum(p.numel() for p in module.model.parameters() if p.requires_grad)
    assert sum(p.numel() for group in optimizer.param_groups for p in group["params"]) == trainable
    assert isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    assert scheduler.factor == 0.5 and scheduler.patience == 1
    assert configured["lr_scheduler"]["monitor"] == "train/loss_epoch"


def test_ema_warm_up_and_swap():
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = TrainableEMA(model, decay=0.9999)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)  # decay = min(0.9999, (1 + 1) / (10 + 1)) = 2/11
    assert ema.shadow["weight"].item() == pytest.approx(9 / 11)
    ema.update(model)  # decay = 3/12: 3/12 * 9/11 + 9/12 * 1
    assert ema.shadow["weight"].item() == pytest.approx(3 / 12 * 9 / 11 + 9 / 12)
    with ema.applied(model):
        assert model.weight.item() == pytest.approx(ema.shadow["weight"].item())
    assert model.weight.item() == 1.0


def test_ema_update_equals_the_per_parameter_formula_and_follows_a_new_model():
    """The foreach update over the cached parameter list is the per-parameter lerp, bit for bit (frozen
    parameters untouched); a different model object is listed anew, not served from the cache."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4), nn.Linear(2, 5))
    model[1].requires_grad_(False)
    ema = TrainableEMA(model, decay=0.9)
    assert set(ema.shadow) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    expected = {name: value.clone() for name, value in ema.shadow.items()}
    for step in range(1, 4):
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(torch.randn_like(parameter))
        ema.update(model)
        decay = min(0.9, (1 + step) / (10 + step))
        for name, parameter in model.named_parameters():
            if name in expected:
                expected[name].lerp_(parameter.detach(), 1.0 - decay)
        assert all(torch.equal(ema.shadow[name], expected[name]) for name in expected)
    other = copy.deepcopy(model)
    with torch.no_grad():
        for parameter in other.parameters():
            parameter.fill_(2.0)
    before = {name: value.clone() for name, value in ema.shadow.items()}
    ema.update(other)
    decay = min(0.9, 5 / 14)
    for name in before:
        assert torch.equal(ema.shadow[name], before[name].lerp_(torch.full_like(before[name], 2.0), 1.0 - decay))


def test_znet_overfits_one_batch(world):
    components = load_stable_diffusion(world["sd"], hash_files=False)
    torch.manual_seed(0)
    model = build_segmenter(model_defaults(variant="znet", image_size=64, gradient_checkpointing=False),
                            components).train()
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    masks = torch.zeros(2, 1, 64, 64)
    masks[:, :, 16:48, 16:48] = 1
    head = list(model.head.parameters())
    rest = [p for name, p in model.named_parameters() if p.requires_grad and not name.startswith("head.")]
    # the 55-weight head learns slowly at SD's rate; optim.head_learning_rate_scale plays this role in training
    optimizer = torch.optim.Adam([{"params": rest, "lr": 1e-3}, {"params": head, "lr": 3e-2}])
    losses = []
    for _ in range(12):
        loss = F.binary_cross_entropy_with_logits(model(images, ["red square", "blue square"]), masks)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0]


def test_training_module_applies_the_configured_head_init(world):
    components = load_stable_diffusion(world["sd"], hash_files=False)
    module = SegmenterLitModule(model_defaults(variant="znet", image_size=64, gradient_checkpointing=False),
                                optim_defaults(head_init="unit_gain"), components=components)
    reference = initialise_head(OutputHead(), "unit_gain")
    for name, parameter in reference.named_parameters():
        assert torch.equal(module.model.head.get_parameter(name), parameter), name
    assert torch.equal(module.ema.shadow["head.layers.0.bias"], reference.layers[0].bias.detach())  # EMA starts there


def test_save_and_load_segmenter_prefers_ema_and_checks_variant(world, tmp_path):
    components = load_stable_diffusion(world["sd"], hash_files=False)
    model_cfg = model_defaults(variant="ldznet", image_size=64, gradient_checkpointing=False,
                               stable_diffusion={"path": str(world["sd"]), "architecture": "tiny"})
    model = build_segmenter(model_cfg, copy.deepcopy(components))
    ema = {name: torch.full_like(p, 0.5) for name, p in model.named_parameters() if p.requires_grad}
    path = save_segmenter(model, tmp_path / "segmenter.pt", model_cfg, ema_state_dict=ema,
                          stable_diffusion_record=components.record)
    loaded = load_segmenter(path, variant="ldznet", task="phrasecut")
    assert not loaded.training
    assert torch.equal(loaded.head.layers[0].weight, torch.full_like(loaded.head.layers[0].weight, 0.5))
    raw = load_segmenter(path, use_ema=False)
    assert torch.equal(raw.head.layers[0].weight, model.head.layers[0].weight)
    with pytest.raises(ValueError, match="variant mismatch"):
        load_segmenter(path, variant="znet")
    with pytest.raises(ValueError, match="task mismatch"):
        load_segmenter(path, task="aigi")


def test_tiny_training_run(world, tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = load_config("experiments/chapter3/tiny.yaml", [
        "model.variant=ldznet", f"model.stable_diffusion.path={world['sd']}",
        f"data.train.root={world['phrasecut']}", f"data.val.root={world['phrasecut']}",
        "schedule.train_samples=12", "+trainer.accumulate_grad_batches=2", "data.val_limit=2",
    ])
    run_dir = train(cfg, root=tmp_path / "runs")

    # 12 samples at global batch 2 x 1 device x 2 accumulation = 4 -> 3 optimiser steps, announced at the start
    assert ("training plan: global batch 4 (2 per device x 1 devices x 2 accumulation), lr 0.0002, 3 steps = 12 "
            "samples = 3.00 epochs (from schedule.train_samples; reference global batch 2), EMA decay "
            f"{0.99 ** 2:.6g}/step") in capsys.readouterr().out
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert summary["global_step"] == 3 and summary["variant"] == "ldznet"
    assert summary["learning_rate"] == pytest.approx(5e-5 * 2 * 1 * 2)  # base x batch x devices x accumulation
    assert summary["training_plan"]["steps"] == 3 and summary["training_plan"]["samples"] == 12
    assert "val/miou_best" in summary["validation"] and summary["stable_diffusion"]["sha256"]
    # Lightning checkpoint: trainable weights only (+ EMA and the header), readable with weights_only=True
    checkpoint = load_torch(run_dir / "checkpoints" / "last.ckpt")
    assert checkpoint["ldznet_segmenter"]["variant"] == "ldznet"
    assert not any(key.startswith(("model.latent_encoder", "model.ldm_features", "model.text_conditioning"))
                   for key in checkpoint["state_dict"])
    assert checkpoint["global_step"] == 3 and checkpoint["ema_state_dict"]["updates"] == 3
    model = load_segmenter(run_dir / "segmenter.pt", variant="ldznet")
    from_lightning = load_segmenter(run_dir / "checkpoints" / "last.ckpt")
    images = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(model(images, ["red square"]), from_lightning(images, ["red square"]))
    events = EventAccumulator(str(run_dir / "tb"), size_guidance={"images": 0}).Reload()
    assert {"val/overlays", "train/overlays"} <= set(events.Tags()["images"])
    assert "train/loss_step" in events.Tags()["scalars"]


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["rgbnet", "znet", "ldznet_concat"])
def test_tiny_training_bf16_and_gradient_checkpointing(world, tmp_path, variant):
    cfg = load_config("experiments/chapter3/tiny.yaml", [
        f"model.variant={variant}", f"model.stable_diffusion.path={world['sd']}", "model.gradient_checkpointing=true",
        f"data.train.root={world['phrasecut']}", f"data.val.root={world['phrasecut']}",
        "trainer.max_steps=2", "trainer.precision=bf16-mixed", "data.val_limit=2",
    ])
    run_dir = train(cfg, root=tmp_path / "runs")
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert summary["global_step"] == 2 and summary["variant"] == variant
    assert torch.isfinite(torch.tensor(summary["validation"]["val/loss"]))


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_equals_one_process_on_the_same_global_batch(world, tmp_path):
    """Issue 13 item 2. Batch 1 per rank on 2 gloo processes (Lightning's ddp_spawn) and batch 2 on one process
    are the same optimisation: EpochStepSampler gives rank r the positions r, r + 2, ... of the epoch order, so
    the two ranks' batches are the single process's batch split in two; DDP averages the ranks' mean-loss
    gradients (= the gradient of the mean over both); every sample's crop, template and noise are functions of
    (seed, sample number); lr = base x 1 x 2 = base x 2 x 1; 8 samples = 4 steps either way; the same EMA decay
    per step; the plateau scheduler reads the rank-averaged epoch mean (= the single process's). Only the float
    summation order differs, so the exported weights agree within a small tolerance. Both run in float64: in
    float32, Adam's first step (+-lr for every weight whose gradient is not exactly zero) turns summation-order
    noise in near-zero gradients into lr-sized differences of single weights."""
    common = ["model.variant=ldznet", f"model.stable_diffusion.path={world['sd']}",
              f"data.train.root={world['phrasecut']}", f"data.val.root={world['phrasecut']}", "data.val_limit=2",
              "schedule.train_samples=8", "trainer.precision=64-true"]
    two = train(load_config("experiments/chapter3/tiny.yaml", common + [
        "data.batch_size=1", "trainer.devices=2", "trainer.strategy=ddp_spawn"]), root=tmp_path / "two")
    one = train(load_config("experiments/chapter3/tiny.yaml", common + ["data.batch_size=2"]), root=tmp_path / "one")
    summaries = [json.loads((run / "metrics.json").read_text()) for run in (two, one)]
    plans = [summary["training_plan"] for summary in summaries]
    assert [plan["devices"] for plan in plans] == [2, 1] and [plan["batch_size"] for plan in plans] == [1, 2]
    for key in ("global_batch", "learning_rate", "steps", "samples", "epochs", "ema_decay"):
        assert plans[0][key] == plans[1][key], key
    assert plans[0]["global_batch"] == 2 and plans[0]["steps"] == 4 and summaries[0]["global_step"] == 4
    assert summaries[0]["learning_rate"] == pytest.approx(5e-5 * 2)
    checkpoint = load_torch(two / "checkpoints" / "last.ckpt")
    assert checkpoint["global_step"] == 4 and checkpoint["ema_state_dict"]["updates"] == 4
    exported = [load_torch(run / "segmenter.pt") for run in (two, one)]
    assert all(torch.equal(exported[0]["ema_state_dict"][name], value)  # the export holds the workers' EMA
               for name, value in checkpoint["ema_state_dict"]["shadow"].items())
    initial = build_segmenter(model_defaults(variant="ldznet", image_size=64, gradient_checkpointing=False),
                              load_stable_diffusion(world["sd"], hash_files=False))
    moved = 0.0
    for key in ("state_dict", "ema_state_dict"):
        assert exported[0][key].keys() == exported[1][key].keys()
        for name, value in exported[0][key].items():
            other = exported[1][key][name]
            assert torch.allclose(value, other, rtol=1e-6, atol=1e-7), (key, name, (value - other).abs().max())
    # the UNet starts from SD's weights in both runs (new layers are random): training moved it far beyond the
    # tolerance (Adam: ~lr = 1e-4 per step), so the agreement above is not that of untrained weights
    start = {name: parameter for name, parameter in initial.named_parameters()
             if name.startswith("unet.") and "ldm_" not in name}
    for name, value in exported[1]["state_dict"].items():
        if name in start:
            moved = max(moved, float((value - start[name]).abs().max()))
    assert moved > 1e-4
