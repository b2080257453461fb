"""RGBNet / ZNet / LD-ZNet / LD-ZNet-concat (issue items 2, 3): sizes, shapes, gradients, LDM features."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from common.testing import write_tiny_stable_diffusion
from ldznet.config import model_defaults
from ldznet.models import build_segmenter, parameter_counts
from ldznet.models.attention_pool import AttentionPool
from ldznet.models.ldm_features import spatial_attention_blocks
from ldznet.models.znet import OutputHead, initialise_head
from ldznet.stable_diffusion import build_random_components, load_stable_diffusion, load_tokenizer
from ldznet.summary import main as summary_main
from ldznet.tiny_configs import write_tiny_tokenizer

PROMPTS = ["a photo of a red square", "blue square"]


@pytest.fixture(scope="module")
def components(tmp_path_factory):
    folder = write_tiny_stable_diffusion(tmp_path_factory.mktemp("sd") / "tiny_sd", seed=1)
    return load_stable_diffusion(folder, hash_files=False)


def _build(components, variant, **options):
    torch.manual_seed(0)
    options = {"gradient_checkpointing": False, **options}
    return build_segmenter(model_defaults(variant=variant, image_size=64, **options), copy.deepcopy(components))


def _images(size=(64, 64), batch=2, seed=0):
    return torch.rand(batch, 3, *size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# --- full SD size on the meta device ----------------------------------------------------------------------

def test_sd_size_parameter_counts_match_the_paper():
    with torch.device("meta"):
        sd = build_random_components("sd")
        frozen_unet = sum(p.numel() for p in sd.unet.parameters())
        model = build_segmenter(model_defaults(variant="ldznet", image_size=384, gradient_checkpointing=False), sd)
    assert frozen_unet / 1e6 == pytest.approx(859.52, abs=0.01)
    counts = parameter_counts(model)
    trainable = sum(entry["trainable"] for entry in counts.values())
    assert trainable / 1e6 == pytest.approx(925.88, abs=0.01)  # "925M trainable parameters" (§3.4.4)
    assert counts["ldm_unet"] == {"trainable": 0, "frozen": frozen_unet}
    assert counts["vae"]["trainable"] == 0 and counts["text_encoder"]["trainable"] == 0
    assert counts["head"]["trainable"] == 55


def test_sd_block_table_and_pool_sizes():
    with torch.device("meta"):
        sd = build_random_components("sd")
    blocks = spatial_attention_blocks(sd.unet)
    names = {block.number: block.name for block in blocks}
    assert names[6] == "down_blocks.2.attentions.1" and names[7] == "mid_block.attentions.0"
    assert [names[n] for n in (8, 9, 10)] == [f"up_blocks.1.attentions.{i}" for i in range(3)]
    assert names[1] == "down_blocks.0.attentions.0" and names[16] == "up_blocks.3.attentions.2"
    assert all(blocks[n - 1].channels == 1280 for n in range(5, 11))
    assert [blocks[n - 1].size(48) for n in (6, 7, 8)] == [12, 6, 12]
    with torch.device("meta"):
        model = build_segmenter(model_defaults(variant="ldznet", image_size=384, gradient_checkpointing=False), sd)
    pools = model.attention_pools
    assert pools["6"].positional_embedding.shape == (145, 1280) and pools["7"].positional_embedding.shape == (37, 1280)


def test_summary_prints_parts_and_totals(capsys):
    summary_main(["--variant", "ldznet", "--size", "sd"])
    lines = dict(line.split(": ") for line in capsys.readouterr().out.strip().splitlines())
    assert int(lines["trainable"]) / 1e6 == pytest.approx(925.88, abs=0.01)
    assert int(lines["ldm_unet.frozen"]) / 1e6 == pytest.approx(859.52, abs=0.01)
    parts = {key: int(value) for key, value in lines.items() if "." in key}
    assert sum(v for k, v in parts.items() if k.endswith(".trainable")) == int(lines["trainable"])
    assert sum(v for k, v in parts.items() if k.endswith(".frozen")) == int(lines["frozen"])


# --- tiny configs -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", ["rgbnet", "znet", "ldznet", "ldznet_concat"])
def test_shapes_and_gradients_reach_only_trainable_parameters(components, variant):
    model = _build(components, variant, gradient_checkpointing=True).train()
    logits = model(_images((128, 128)), PROMPTS)  # 128 > the 64 the pools were built for: interpolated
    assert logits.shape == (2, 1, 128, 128)
    F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits)).backward()
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            assert parameter.grad is not None, f"no gradient for trainable {name}"
        else:
            assert parameter.grad is None, f"gradient reached frozen {name}"
    counts = parameter_counts(model)
    assert counts["znet_unet"]["frozen"] == 0 and counts["text_encoder"]["trainable"] == 0
    if variant == "ldznet":
        assert any(p.grad.abs().sum() > 0 for p in model.attention_pools.parameters())
    with torch.no_grad():
        assert model.eval()(_images((64, 128), batch=1), ["red square"]).shape == (1, 1, 64, 128)


def _logits_and_unet_output(model, images):
    """Logits and the UNet's 1-channel output before the head (the head's default init damps differences)."""
    captured = []
    handle = model.unet.register_forward_hook(lambda module, args, output: captured.append(output.sample))
    with torch.no_grad():
        logits = model(images, PROMPTS)
    handle.remove()
    return logits, captured[0]


def test_ldm_features_change_ldznet_but_not_znet(components):
    images = _images()
    outputs = {}
    for variant in ("znet", "ldznet"):
        for timestep in (400, 100):
            model = _build(components, variant, ldm={"eval_timestep": timestep}).eval()
            outputs[variant, timestep] = _logits_and_unet_output(model, images)
    assert torch.equal(outputs["znet", 400][0], outputs["znet", 100][0])
    assert not torch.equal(outputs["ldznet", 400][0], outputs["ldznet", 100][0])
    unet_change = (outputs["ldznet", 400][1] - outputs["ldznet", 100][1]).abs().max()
    assert unet_change > 1e-4 * outputs["ldznet", 400][1].abs().max()
    # and directly: scaling the LDM feature maps changes LD-ZNet's output
    model = _build(components, "ldznet").eval()
    before = _logits_and_unet_output(model, images)
    original = model.ldm_features.forward
    model.ldm_features.forward = lambda *a, **k: {n: 3 * f for n, f in original(*a, **k).items()}
    after = _logits_and_unet_output(model, images)
    assert not torch.equal(before[0], after[0])
    assert (before[1] - after[1]).abs().max() > 1e-4 * before[1].abs().max()


def test_injection_reduces_to_znet_when_the_ldm_path_is_silenced(components):
    """Our re-written transformer-block forward equals diffusers' when the extra cross-attention adds nothing,
    and the concat projection [identity | 0] gives ZNet back: the injection changes nothing else."""
    images = _images()
    znet = _build(components, "znet").eval()
    with torch.no_grad():
        reference = _logits_and_unet_output(znet, images)[1]
    ldznet = _build(components, "ldznet").eval()
    concat = _build(components, "ldznet_concat").eval()
    with torch.no_grad():
        for name, module in ldznet.unet.named_modules():
            if name.endswith("ldm_attention"):
                module.to_out[0].weight.zero_()
                module.to_out[0].bias.zero_()
        for name, module in concat.unet.named_modules():
            if name.endswith("ldm_concat_projection"):
                channels = module.out_channels
                module.weight.zero_()
                module.bias.zero_()
                module.weight[:, :channels, 0, 0] = torch.eye(channels)
        assert torch.allclose(_logits_and_unet_output(ldznet, images)[1], reference, atol=1e-5)
        assert torch.allclose(_logits_and_unet_output(concat, images)[1], reference, atol=1e-5)


def test_znet_input_is_scaled_latent_and_output_conv_is_sd_channel_zero(components):
    model = _build(components, "znet", latent="mean").eval()
    images = _images()
    expected = 0.18215 * components.vae.encode(images).latent_dist.mean
    assert torch.allclose(model.encode(images), expected, atol=1e-6)
    assert model.unet.conv_out.out_channels == 1
    assert torch.equal(model.unet.conv_out.weight, components.unet.conv_out.weight[:1])
    assert torch.equal(model.unet.conv_out.bias, components.unet.conv_out.bias[:1])


def test_ldm_features_stop_early_and_match_a_full_pass(components):
    model = _build(components, "ldznet").eval()
    features_module = model.ldm_features
    unet = features_module.unet
    z = torch.randn(2, 4, 16, 16)
    text = model.text_conditioning(PROMPTS)
    calls = []
    handle = unet.up_blocks[2].register_forward_hook(lambda *args: calls.append(1))
    timesteps = torch.tensor([400, 300])
    noise = torch.randn_like(z)
    with torch.no_grad():
        features = features_module(z, text, timesteps=timesteps, noise=noise)
    handle.remove()
    assert calls == [] and sorted(features) == [6, 7, 8, 9, 10]
    assert features[6].shape == (2, 64, 4, 4) and features[7].shape == (2, 64, 2, 2)
    # reference: a complete UNet pass with plain hooks on the same modules
    reference = {}
    hooks = [unet.get_submodule(name).register_forward_hook(
        lambda m, i, o, n=number: reference.__setitem__(n, o[0]))
        for number, name in [(6, "down_blocks.2.attentions.1"), (7, "mid_block.attentions.0"),
                             (10, "up_blocks.1.attentions.2")]]
    noisy = features_module.scheduler.add_noise(z, noise, timesteps)
    with torch.no_grad():
        unet(noisy, timesteps, encoder_hidden_states=text)
    for hook in hooks:
        hook.remove()
    for number in (6, 7, 10):
        assert torch.allclose(features[number], reference[number], atol=1e-6)


def test_ldm_timesteps_training_range_and_evaluation_determinism(components):
    model = _build(components, "ldznet")
    features = model.ldm_features.train()
    z = torch.randn(256, 4, 8, 8)
    timesteps, _ = features.sample_timesteps_and_noise(z)
    assert timesteps.min() >= 300 and timesteps.max() < 500 and len(set(timesteps.tolist())) > 50
    features.eval()
    (t1, n1), (t2, n2) = features.sample_timesteps_and_noise(z[:2]), features.sample_timesteps_and_noise(z[:2])
    assert (t1 == 400).all() and torch.equal(t1, t2) and torch.equal(n1, n2)


def test_attention_pool_matches_a_direct_computation():
    torch.manual_seed(0)
    pool = AttentionPool(channels=8, size=2, heads=2).double()
    x = torch.randn(3, 8, 2, 2, dtype=torch.float64)
    out = pool(x)
    assert out.shape == (3, 5, 8)
    # independent: tokens = [mean, pixels] + pos; per head softmax(q k^T / sqrt(d)) v; output projection
    tokens = torch.cat([x.flatten(2).mean(2, keepdim=True), x.flatten(2)], 2).transpose(1, 2)
    tokens = tokens + pool.positional_embedding
    q, k, v = (tokens @ w.T + b for w, b in zip(pool.qkv.weight.chunk(3), pool.qkv.bias.chunk(3)))
    heads = []
    for h in range(2):
        sl = slice(4 * h, 4 * h + 4)
        weights = torch.softmax(q[..., sl] @ k[..., sl].transpose(1, 2) / math.sqrt(4), dim=-1)
        heads.append(weights @ v[..., sl])
    expected = torch.cat(heads, -1) @ pool.out_projection.weight.T + pool.out_projection.bias
    assert torch.allclose(out, expected, atol=1e-10)
    # other sizes: the spatial positional embedding is interpolated, the mean token's entry kept
    bigger = pool.positional_embedding_for(4, 4)
    assert bigger.shape == (17, 8) and torch.equal(bigger[0], pool.positional_embedding[0])
    assert torch.autograd.gradcheck(pool, (x[:1].clone().requires_grad_(),))


def test_bad_inputs_raise_clear_errors(components):
    model = _build(components, "znet").eval()
    with pytest.raises(ValueError, match="multiple of 64"):
        model(_images((60, 64)), PROMPTS)
    with pytest.raises(ValueError, match="2 prompts for a batch of 1|1 prompts"):
        model(_images(batch=1), PROMPTS)
    with pytest.raises(ValueError, match="variant"):
        build_segmenter(model_defaults(variant="unet"), components)
    with pytest.raises(ValueError, match="unknown model option"):
        build_segmenter({**model_defaults(variant="znet"), "imagesize": 3}, components)



@pytest.mark.slow
def test_sd_size_ldznet_runs_with_real_tensors(tmp_path):
    """Random SD-size weights (about 8 GB of RAM): the full-size path, not only the meta build."""
    torch.manual_seed(0)
    sd = build_random_components("sd", tokenizer=load_tokenizer(write_tiny_tokenizer(tmp_path / "tokenizer")))
    model = build_segmenter(model_defaults(variant="ldznet", image_size=384, gradient_checkpointing=False),
                            sd).eval()
    with torch.no_grad():
        logits = model(torch.zeros(1, 3, 128, 128), ["a photo of a cat"])  # pools interpolate 12 -> 4, 6 -> 2
    assert logits.shape == (1, 1, 128, 128) and torch.isfinite(logits).all()


def _head_input_gradient(head: torch.nn.Module, inputs: torch.Tensor) -> float:
    """Mean |d sum(head(x)) / dx| per input pixel."""
    inputs = inputs.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(head(inputs).sum(), inputs)
    return gradient.abs().mean().item()


def test_head_default_init_blocks_the_gradient_and_unit_gain_passes_it():
    """The cause of the Chapter-3 collapse at the constant mask (docs/demo-diagnosis.md): at PyTorch's default
    init the single-channel SiLU head passes ~no gradient; the "unit_gain" init is nearest upsampling of silu(x)."""
    inputs = torch.linspace(-2, 3, 64).reshape(1, 1, 8, 8)
    default_gains = []
    for seed in range(10):
        torch.manual_seed(seed)
        default_gains.append(_head_input_gradient(initialise_head(OutputHead(), "pytorch"), inputs))
    head = initialise_head(OutputHead(), "unit_gain")
    # independent expectation, pointwise: silu(x), +4, six SiLUs, -4; each input pixel becomes an 8x8 block

    def pointwise(values: torch.Tensor) -> torch.Tensor:
        values = F.silu(values) + 4.0
        for _ in range(6):
            values = F.silu(values)
        return values - 4.0

    expected = F.interpolate(pointwise(inputs), scale_factor=8, mode="nearest")
    assert torch.allclose(head(inputs), expected, atol=1e-5)
    x = inputs.clone().requires_grad_(True)
    (slope,) = torch.autograd.grad(pointwise(x).sum(), x)
    unit_gain = _head_input_gradient(head, inputs)
    assert unit_gain == pytest.approx(64 * slope.abs().mean().item(), rel=1e-4)
    assert max(default_gains) < 0.01 * unit_gain
    with pytest.raises(ValueError, match="head_init"):
        initialise_head(OutputHead(), "xavier")
