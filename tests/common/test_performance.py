"""Throughput switches (common.performance): each one runs and changes only the speed, not the result.

SharinGAN: one end-to-end iteration (5 critic, 1 G, 1 T Adam steps) of the tiny depth config under a Lightning
Trainer, from the same initial weights and batch, with and without the switch; compared is the weight *update*
of G, D and T (final - initial), relative to the plain run's update (comparing the weights themselves would hide
any difference under the small learning rates), leaving out the biases that a batch norm cancels (zero exact
gradient: their Adam step is the sign of rounding noise). LD-ZNet (tiny SD topology): loss and gradients of one
forward/backward with and without the switch; and one training step with the fused AdamW equals the plain one.
"""

from __future__ import annotations

import copy
import logging

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from benchmarks.sharingan import Batches, depth_batch
from common.config import REPO_ROOT, load_config
from common.performance import (
    apply_performance,
    attention_processors,
    compile_in_place,
    fused_kwargs,
    performance_options,
    set_attention,
)
from sharingan.lit_module import SharinGANModule

DEPTH_TINY = REPO_ROOT / "experiments" / "chapter2" / "depth_tiny.yaml"


def test_options_validated_with_the_key_named():
    assert performance_options(None)["attention"] == "sdpa"
    with pytest.raises(ValueError, match="unknown performance option.*'chanels_last'"):
        performance_options({"chanels_last": True})
    with pytest.raises(ValueError, match="performance.fused_optimizer"):
        performance_options({"fused_optimizer": "yes"})
    with pytest.raises(ValueError, match="performance.attention"):
        performance_options({"attention": "flash"})
    with pytest.raises(ValueError, match="performance.compile must be"):
        performance_options({"compile": "true"})


def test_fused_only_where_asked_and_available():
    cpu = [torch.zeros(2)]
    assert fused_kwargs(None, cpu) == {}  # auto: CUDA only
    assert fused_kwargs({"fused_optimizer": True}, cpu) == {"fused": True}
    assert fused_kwargs({"fused_optimizer": False}, cpu) == {}
    with pytest.raises(ValueError, match="no fused Adam kernel for device"):
        fused_kwargs({"fused_optimizer": True}, [torch.zeros(2, device="meta")])


# ------------------------------------------------------------------------------------------------ SharinGAN
@pytest.fixture(scope="module")
def sharingan_setup():
    cfg = load_config(DEPTH_TINY, ["logging.image_every=0"])
    torch.manual_seed(0)
    initial = {name: copy.deepcopy(network.state_dict())
               for name, network in SharinGANModule(cfg).networks().items()}
    # 4 + 4 images: with 2, the critic's batch norms on two samples give almost no gradient to the layers below
    # (each normalised pair is +-1), and the comparison would measure rounding noise
    batch = depth_batch(4, [32, 64], torch.Generator().manual_seed(3))
    return cfg, initial, batch


def cancelled_biases(network: torch.nn.Module, image: torch.Tensor) -> set[str]:
    """Biases of the convolutions whose output goes straight into a batch norm (train mode): the norm subtracts
    the batch mean, so their exact gradient is zero and what backward computes is rounding noise, which Adam
    turns into full-size +-lr steps of arbitrary sign. Found by following the tensors of one forward pass."""
    outputs: dict[int, str] = {}
    found: set[str] = set()
    handles = []
    for name, module in network.named_modules():
        if isinstance(module, torch.nn.Conv2d | torch.nn.ConvTranspose2d | torch.nn.Linear) and module.bias is not None:
            handles.append(module.register_forward_hook(
                lambda m, i, o, name=name: outputs.__setitem__(id(o), f"{name}.bias")))
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            handles.append(module.register_forward_pre_hook(
                lambda m, i: found.add(outputs[id(i[0])]) if id(i[0]) in outputs else None))
    network.train()
    with torch.no_grad():
        network(image)
    for handle in handles:
        handle.remove()
    return found


def sharingan_iteration(setup, options: dict | None = None, precision: str = "32-true") -> dict:
    """Per network, the update (final - initial) of every floating parameter after one iteration."""
    cfg, initial, batch = setup
    module = SharinGANModule(cfg)
    for name, network in module.networks().items():
        network.load_state_dict(initial[name])
    record = apply_performance(module, options, {"generator": module.generator,
                                                 "task_network": module.task_network})
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=1, limit_train_batches=1, limit_val_batches=0,
                         num_sanity_val_steps=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, precision=precision)
    trainer.fit(module, train_dataloaders=DataLoader(Batches([batch]), batch_size=None, num_workers=0))
    updates = {}
    for name, network in module.networks().items():
        final = network.state_dict()
        image = batch["synthetic"]["image"] if name != "task_network" else module.generator(batch["synthetic"]["image"])
        skip = cancelled_biases(copy.deepcopy(network), image.detach())
        updates[name] = torch.cat([(final[key].float() - initial[name][key].float()).flatten()
                                   for key in initial[name] if initial[name][key].is_floating_point()
                                   and "running_" not in key and key not in skip])
    updates["record"] = record
    return updates


@pytest.fixture(scope="module")
def plain_updates(sharingan_setup):
    return sharingan_iteration(sharingan_setup)


def relative_difference(updates: dict, reference: dict) -> dict[str, float]:
    return {name: float((updates[name] - reference[name]).norm() / reference[name].norm())
            for name in ("generator", "critic", "task_network")}


def sharingan_gradients(setup, options: dict | None = None, bf16: bool = False) -> dict[str, torch.Tensor]:
    """Gradients at the initial weights of the three losses of an iteration (critic WGAN-GP, generator
    α1 L_adv + α2 L_r + α3 L_T, task L_T), each w.r.t. its own network, with the switches applied."""
    from sharingan.lit_module import frozen
    from sharingan.losses import critic_loss, generator_adversarial_loss, reconstruction_loss

    cfg, initial, batch = setup
    module = SharinGANModule(cfg)
    for name, network in module.networks().items():
        network.load_state_dict(initial[name])
    apply_performance(module, options, {"generator": module.generator, "task_network": module.task_network})
    module.train()
    x_synthetic, x_real = batch["synthetic"]["image"], batch["real"]["image"]
    weights = module.weights
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)

    def gradient(loss, network, name) -> torch.Tensor:
        skip = cancelled_biases(copy.deepcopy(network), (x_synthetic if name != "task_network"
                                                         else module.generator(x_synthetic)).detach())
        named = [(key, p) for key, p in network.named_parameters() if key not in skip]
        grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
        return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten().float()
                          for g, (_, p) in zip(grads, named)])

    result = {}
    with autocast:
        with torch.no_grad():
            shared = module.generator(x_synthetic), module.generator(x_real)
        torch.manual_seed(11)  # the gradient penalty's interpolation weights
        loss, _ = critic_loss(module.critic, *shared, weights.gradient_penalty)
        result["critic"] = gradient(loss, module.critic, "critic")
        with frozen(module.critic, module.task_network):
            synthetic, real = module.generator(x_synthetic), module.generator(x_real)
            loss = (weights.adversarial * generator_adversarial_loss(module.critic, synthetic, real)
                    + weights.task * module.task_objective(synthetic, real, batch)[0]
                    + weights.reconstruction * (reconstruction_loss(synthetic, x_synthetic)
                                                + reconstruction_loss(real, x_real)))
        result["generator"] = gradient(loss, module.generator, "generator")
        loss = module.task_objective(*(s.detach() for s in shared), batch)[0]
        result["task_network"] = gradient(loss, module.task_network, "task_network")
    return result


@pytest.fixture(scope="module")
def plain_gradients(sharingan_setup):
    return sharingan_gradients(sharingan_setup)


def test_sharingan_fused_adam_gives_the_plain_update(sharingan_setup, plain_updates):
    """Same optimiser arithmetic, fused: the update of a whole iteration (5 + 1 + 1 Adam steps) agrees. T's single
    step (nearly sign(gradient) at a first Adam step) follows G's and amplifies the rounding differences of G's
    outputs, so its bound is looser."""
    updates = sharingan_iteration(sharingan_setup, {"fused_optimizer": True})
    assert all(plain_updates[name].norm() > 0 for name in ("generator", "critic", "task_network"))  # it trained
    difference = relative_difference(updates, plain_updates)
    tolerance = {"generator": 1e-4, "critic": 1e-4, "task_network": 2e-2}
    assert all(difference[name] < tolerance[name] for name in tolerance), difference


# fp32 switches change only the rounding; the tiny critic (batch norms over 4 samples, a loss that is a difference
# of two means) amplifies rounding to ~5e-3 relative in its and G's gradients (channels_last measured: D 1.9e-3,
# G 5.3e-3, T 4e-5); a layout or compile error gives O(1)
FP32_SWITCH_TOLERANCE = 2e-2


@pytest.mark.parametrize("options", [
    {"channels_last": True},
    pytest.param({"compile": True, "compile_backend": "aot_eager"}, marks=pytest.mark.slow),
], ids=["channels_last", "compile"])
def test_sharingan_switch_gives_the_plain_gradients_and_trains(sharingan_setup, plain_gradients, options):
    """The three losses' gradients at the same weights agree with the plain ones; a whole iteration under the
    Trainer runs and updates every network. (The iteration's final weights are not compared: its 7 chained Adam
    steps amplify rounding differences.)"""
    gradients = sharingan_gradients(sharingan_setup, options)
    for name, plain in plain_gradients.items():
        assert plain.norm() > 0
        difference = float((gradients[name] - plain).norm() / plain.norm())
        assert difference < FP32_SWITCH_TOLERANCE, (name, difference)
    updates = sharingan_iteration(sharingan_setup, options)
    for name in ("generator", "critic", "task_network"):
        assert torch.isfinite(updates[name]).all() and updates[name].norm() > 0, name
    if options.get("compile"):
        assert updates["record"]["compile"] == {"generator": "compiled", "task_network": "compiled"}


def test_sharingan_bf16_mixed_is_refused_end_to_end(tmp_path):
    """bf16-mixed is not offered for SharinGAN's end-to-end stage (docs/benchmarks.md "Throughput switches": on the
    tiny CPU networks its gradients differ from fp32 by O(1), and a standalone bf16-mixed iteration left non-finite
    critic weights); sharingan.train refuses it with a message naming the key."""
    from sharingan.train import run_stage

    cfg = load_config(DEPTH_TINY, ["trainer.precision=bf16-mixed", "schedule.train_iterations=1"])
    with pytest.raises(ValueError, match="trainer.precision=bf16-mixed is refused for SharinGAN's end-to-end"):
        run_stage(cfg, "train", tmp_path)
    assert not (tmp_path / "chapter2").exists()  # refused before any run folder is made


def test_failed_compile_falls_back_to_eager_with_a_warning(sharingan_setup, plain_updates, caplog):
    """A compiler that fails at the first call: the network runs eager (same update as the plain run), and the
    failure is logged."""
    import torch._dynamo
    from torch._dynamo import register_backend

    @register_backend(name="always_fails_for_test")
    def broken_backend(graph, example_inputs):
        raise RuntimeError("this backend always fails")

    torch._dynamo.reset()
    with caplog.at_level(logging.WARNING):
        updates = sharingan_iteration(sharingan_setup, {"compile": True, "compile_backend": "always_fails_for_test"})
    torch._dynamo.reset()
    assert max(relative_difference(updates, plain_updates).values()) < 1e-5
    assert "this backend always fails" in caplog.text


def test_compile_that_cannot_wrap_stays_eager_and_warns():
    class Unwrappable(torch.nn.Module):
        def compile(self, *args, **kwargs):
            raise RuntimeError("no compiler here")

    with pytest.warns(RuntimeWarning, match="running it eager: RuntimeError: no compiler here"):
        status = compile_in_place({"network": Unwrappable(), "absent": None})
    assert status == {"network": "eager (RuntimeError: no compiler here)"}


# --------------------------------------------------------------------------------------------------- LD-ZNet
@pytest.fixture(scope="module")
def ldznet_setup():
    from benchmarks.memory import make_batch
    from benchmarks.segmentation import tokenizer_for_benchmarks
    from ldznet.config import model_defaults, optim_defaults
    from ldznet.lit_module import SegmenterLitModule
    from ldznet.stable_diffusion import build_random_components

    torch.manual_seed(0)
    components = build_random_components("tiny", tokenizer_for_benchmarks())
    module = SegmenterLitModule(model_defaults(variant="ldznet", image_size=64, gradient_checkpointing=False),
                                optim_defaults(ema=False), components=components)
    return module, make_batch(2, 64, torch.device("cpu"))


def loss_and_gradients(module, batch, keep: bool = False) -> tuple[float, torch.Tensor]:
    """One training-mode forward/backward with fixed per-sample noise (VAE draw, t, z_t noise)."""
    from ldznet.models.ldm_features import per_sample_noise

    module.train()
    module.zero_grad(set_to_none=True)
    with per_sample_noise(module.model, [0, 1], seed=5):
        loss, _ = module._loss(batch)
    loss.backward()
    gradients = torch.cat([p.grad.flatten() for p in module.model.parameters() if p.requires_grad])
    if not keep:
        module.zero_grad(set_to_none=True)
    return float(loss), gradients


def test_ldznet_uses_sdpa_attention_and_math_gives_the_same_gradients(ldznet_setup):
    module, batch = ldznet_setup
    processors = attention_processors(module.model)
    assert set(processors) == {"AttnProcessor2_0"}  # diffusers' default on torch 2: SDPA
    sdpa_loss, sdpa_gradients = loss_and_gradients(module, batch)
    count = set_attention(module.model, "math")
    try:
        assert attention_processors(module.model) == {"AttnProcessor": count}
        math_loss, math_gradients = loss_and_gradients(module, batch)
    finally:
        set_attention(module.model, "sdpa")
    assert math_loss == pytest.approx(sdpa_loss, rel=1e-5)
    assert float((math_gradients - sdpa_gradients).norm() / sdpa_gradients.norm()) < 1e-4


def test_ldznet_gradient_checkpointing_and_channels_last_give_the_same_gradients(ldznet_setup):
    module, batch = ldznet_setup
    loss, gradients = loss_and_gradients(module, batch)
    module.model.unet.enable_gradient_checkpointing()
    try:
        checkpointed_loss, checkpointed = loss_and_gradients(module, batch)
    finally:
        module.model.unet.disable_gradient_checkpointing()
    assert checkpointed_loss == pytest.approx(loss, rel=1e-6)
    assert float((checkpointed - gradients).norm() / gradients.norm()) < 1e-5
    apply_performance(module, {"channels_last": True}, {})
    try:
        assert module.model.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
        last_loss, last_gradients = loss_and_gradients(module, batch)
    finally:
        module.to(memory_format=torch.contiguous_format)
        module.performance = performance_options(None)
    assert last_loss == pytest.approx(loss, rel=1e-5)
    assert float((last_gradients - gradients).norm() / gradients.norm()) < 1e-3


def test_ldznet_bf16_autocast_gives_close_loss_and_gradients(ldznet_setup):
    module, batch = ldznet_setup
    loss, gradients = loss_and_gradients(module, batch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16_loss, bf16_gradients = loss_and_gradients(module, batch)
    assert bf16_loss == pytest.approx(loss, rel=2e-2)
    cosine = torch.nn.functional.cosine_similarity(bf16_gradients, gradients, dim=0)
    assert cosine > 0.95, float(cosine)


def test_ldznet_fused_adamw_step_equals_the_plain_step(ldznet_setup):
    module, batch = ldznet_setup
    results = []
    trainable = [p for p in module.model.parameters() if p.requires_grad]
    saved = [p.detach().clone() for p in trainable]
    for fused in (False, True):
        with torch.no_grad():
            for parameter, value in zip(trainable, saved):
                parameter.copy_(value)
        copy_ = module
        copy_.performance = performance_options({"fused_optimizer": fused})
        optimizer = copy_.configure_optimizers()["optimizer"]
        assert bool(optimizer.defaults.get("fused")) is fused
        before = torch.cat([p.detach().flatten().clone() for p in copy_.model.parameters() if p.requires_grad])
        for group in optimizer.param_groups:  # a large learning rate, so the step is well above rounding
            group["lr"] = 1e-3
        loss_and_gradients(copy_, batch, keep=True)
        optimizer.step()
        after = torch.cat([p.detach().flatten() for p in copy_.model.parameters() if p.requires_grad])
        results.append(after - before)
    with torch.no_grad():
        for parameter, value in zip(trainable, saved):
            parameter.copy_(value)
    module.performance = performance_options(None)
    plain, fused_update = results
    assert plain.norm() > 0
    assert float((fused_update - plain).norm() / plain.norm()) < 1e-4


def test_pretraining_adam_is_fused_only_when_asked():
    """Both pretraining stages read performance.fused_optimizer (set by apply_performance), as the end-to-end
    stage does: the CPU studies switch the fused kernel on for all three stages."""
    from sharingan.pretrain import GeneratorPretraining, TaskPretraining

    cfg = load_config(DEPTH_TINY, ["logging.image_every=0"])
    for stage in (GeneratorPretraining, TaskPretraining):
        module = stage(cfg)
        assert not module.configure_optimizers().defaults.get("fused")  # no performance node: plain loop
        module.performance = performance_options({"fused_optimizer": True})
        assert module.configure_optimizers().defaults["fused"] is True
        module.performance = performance_options(None)  # auto: CUDA only, these are on the CPU
        assert not module.configure_optimizers().defaults.get("fused")
