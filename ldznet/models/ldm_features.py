"""Internal features of the frozen LDM: outputs of its spatial-attention modules (dissertation §3.2.2, Fig 3.4).

SD v1's UNet has 16 spatial-attention (Transformer2DModel) modules; numbered 1-16 in forward order they are
(docs/ref-ldznet.md §2.1):

    1-2   down_blocks.0.attentions.0/1     C0, latent/1      11-13 up_blocks.2.attentions.0/1/2  C1, latent/2
    3-4   down_blocks.1.attentions.0/1     C1, latent/2      14-16 up_blocks.3.attentions.0/1/2  C0, latent/1
    5-6   down_blocks.2.attentions.0/1     C2, latent/4
    7     mid_block.attentions.0           C3, latent/8
    8-10  up_blocks.1.attentions.0/1/2     C2, latent/4

LD-ZNet uses blocks 6-10 (all 1280 channels in SD). `LDMFeatures` runs the frozen UNet once on the noised
latent z_t = sqrt(abar_t) z + sqrt(1 - abar_t) eps, conditioned on the same text, takes the wanted outputs with
forward hooks, and stops the UNet right after the last wanted block (blocks 11-16 and the eps head are never
computed). Timestep and noise (§2.3): t uniform in [300, 500) with fresh noise in training, as the LD-ZNet code;
at evaluation a fixed t (default 400) and seeded noise, so evaluation is repeatable.

Per-sample noise (`per_sample_noise`): inside that block every random draw of a sample -- the VAE posterior draw
(`ldznet.models.znet.LatentEncoder`), its timestep and its z_t noise -- comes from its own generator seeded with
`common.resilience.sample_seed(seed, key, stream)`, key = the sample's dataset index (evaluation) or sample number
(training), one stream per draw. A sample's noise then depends neither on the batch it is in, nor on its position
there, nor on the number of DDP ranks, and the posterior draw and the z_t noise are independent tensors.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from common.resilience import sample_seed

SPATIAL_ATTENTION_COUNT = 16


@dataclass(frozen=True)
class SpatialAttentionBlock:
    """One of the 16 spatial-attention modules: its 1-based number, diffusers name, channels, downsampling."""

    number: int
    name: str
    channels: int
    downsampling: int  # feature side = latent side / downsampling

    def size(self, latent_size: int) -> int:
        return latent_size // self.downsampling


def spatial_attention_blocks(unet: nn.Module) -> list[SpatialAttentionBlock]:
    """The 16 spatial-attention modules of an SD-v1-shaped UNet in forward order (raises for other shapes)."""
    levels = len(unet.down_blocks)
    found = []
    for level, block in enumerate(unet.down_blocks):
        for index, attention in enumerate(getattr(block, "attentions", None) or []):
            found.append((f"down_blocks.{level}.attentions.{index}", attention.in_channels, 2 ** level))
    for index, attention in enumerate(getattr(unet.mid_block, "attentions", None) or []):
        found.append((f"mid_block.attentions.{index}", attention.in_channels, 2 ** (levels - 1)))
    for level, block in enumerate(unet.up_blocks):
        for index, attention in enumerate(getattr(block, "attentions", None) or []):
            found.append((f"up_blocks.{level}.attentions.{index}", attention.in_channels, 2 ** (levels - 1 - level)))
    if len(found) != SPATIAL_ATTENTION_COUNT:
        raise ValueError(f"expected an SD v1 UNet with {SPATIAL_ATTENTION_COUNT} spatial-attention modules, found "
                         f"{len(found)}: {[name for name, _, _ in found]}")
    return [SpatialAttentionBlock(number, name, channels, downsampling)
            for number, (name, channels, downsampling) in enumerate(found, start=1)]


def check_block_numbers(blocks: Sequence[int]) -> tuple[int, ...]:
    blocks = tuple(int(block) for block in blocks)
    bad = [block for block in blocks if not 1 <= block <= SPATIAL_ATTENTION_COUNT]
    if bad or not blocks:
        raise ValueError(f"spatial-attention block numbers must be in 1..{SPATIAL_ATTENTION_COUNT}, got {blocks}")
    return blocks


# sample_seed streams of the per-sample draws (stream 0 is the data's augmentation, 1 was the old per-batch noise)
NOISE_STREAMS = {"posterior": 2, "timestep": 3, "z_t": 4}


@dataclass(frozen=True)
class NoiseKeys:
    """Seed (None: the module's evaluation seed) and one key per sample of the batch."""

    seed: int | None
    keys: tuple[int, ...]


class PerSampleNoise:
    """Mixin of the modules that draw noise (LatentEncoder, LDMFeatures): `noise_keys` is set by
    `per_sample_noise` for the duration of one forward pass."""

    noise_keys: NoiseKeys | None = None

    def _generators(self, batch: int, stream: str, eval_seed: int) -> list[torch.Generator] | None:
        """One CPU generator per sample, or None in training without keys (then the global generator draws)."""
        noise_keys = self.noise_keys
        if noise_keys is None:
            if self.training:
                return None
            noise_keys = NoiseKeys(None, tuple(range(batch)))  # direct calls (predict): keys = batch positions
        if len(noise_keys.keys) != batch:
            raise ValueError(f"per_sample_noise got {len(noise_keys.keys)} keys for a batch of {batch} samples")
        if noise_keys.seed is None and self.training:
            raise ValueError("per_sample_noise in training needs the run's seed")
        seed = eval_seed if noise_keys.seed is None else noise_keys.seed
        return [torch.Generator().manual_seed(sample_seed(seed, key, NOISE_STREAMS[stream]))
                for key in noise_keys.keys]

    def sample_normal(self, shape: Sequence[int], stream: str, eval_seed: int) -> torch.Tensor | None:
        """(B, ...) standard normal float32 on the CPU, row k from sample k's generator (None: see above)."""
        generators = self._generators(int(shape[0]), stream, eval_seed)
        if generators is None:
            return None
        return torch.stack([torch.randn(tuple(shape[1:]), generator=generator) for generator in generators])


_NOISE_MODULES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _noise_modules(model: nn.Module) -> list[PerSampleNoise]:
    """The PerSampleNoise modules of `model`, found once per model (a walk over every module, the frozen UNet's
    too, costs ~5 ms per demo training step on the CPU; a model's submodules do not change after it is built)."""
    found = _NOISE_MODULES.get(model)
    if found is None:
        found = _NOISE_MODULES[model] = [module for module in model.modules() if isinstance(module, PerSampleNoise)]
    return found


@contextlib.contextmanager
def per_sample_noise(model: nn.Module, keys: Sequence[int], seed: int | None = None) -> Iterator[None]:
    """Within the block, sample k's posterior draw, timestep and z_t noise come from generators seeded with
    (seed, keys[k], stream) (seed None: each module's evaluation seed, `model.eval_seed`). Evaluation passes
    dataset indices, training (seed = the run's) sample numbers. Models without noise are unaffected."""
    noise_keys = NoiseKeys(None if seed is None else int(seed), tuple(int(key) for key in keys))
    modules = _noise_modules(model)
    previous = [module.noise_keys for module in modules]
    for module in modules:
        module.noise_keys = noise_keys
    try:
        yield
    finally:
        for module, value in zip(modules, previous):
            module.noise_keys = value


class _StopForward(Exception):
    """Raised by the last hook to end the frozen UNet's forward pass early."""


class LDMFeatures(PerSampleNoise, nn.Module):
    """Frozen SD UNet -> {block number: feature (B, C, h, w)} after the chosen spatial-attention modules."""

    def __init__(self, unet: nn.Module, scheduler, blocks: Sequence[int], train_timesteps: Sequence[int] | None,
                 eval_timestep: int | None, eval_noise_seed: int = 0):
        """`train_timesteps` [low, high) and `eval_timestep` are `model.ldm.*` of experiments/chapter3/base.yaml
        (no default in code); None for both when every call passes its own timesteps (the Fig 3.4 probe)."""
        super().__init__()
        self.unet = unet.requires_grad_(False).eval()
        self.scheduler = scheduler
        self.blocks = check_block_numbers(blocks)
        self.layout = {block.number: block for block in spatial_attention_blocks(unet)}
        steps = scheduler.config.num_train_timesteps
        if (train_timesteps is None) != (eval_timestep is None):
            raise ValueError("LDMFeatures: give both train_timesteps and eval_timestep, or neither (the caller then "
                             f"passes timesteps), got {train_timesteps!r} and {eval_timestep!r}")
        if train_timesteps is not None:
            low, high = (int(value) for value in train_timesteps)
            if not 0 <= low < high <= steps or not 0 <= int(eval_timestep) < steps:
                raise ValueError(f"timesteps must lie in [0, {steps}): train range [{low}, {high}), eval "
                                 f"{eval_timestep}")
            self.train_timesteps: tuple[int, int] | None = (low, high)
            self.eval_timestep: int | None = int(eval_timestep)
        else:
            self.train_timesteps, self.eval_timestep = None, None
        self.eval_noise_seed = int(eval_noise_seed)

    def train(self, mode: bool = True) -> LDMFeatures:
        super().train(mode)
        self.unet.eval()
        return self

    def sample_timesteps_and_noise(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training: t ~ U[low, high) per sample and fresh noise; eval: fixed t and seeded noise.

        Each sample's t and noise come from its own generators (`per_sample_noise`: (seed, key, stream);
        at evaluation without keys, key = the batch position); only training without keys draws from the
        global generator."""
        if self.train_timesteps is None:
            raise ValueError("LDMFeatures was built without train_timesteps / eval_timestep: pass timesteps and noise")
        batch = z.shape[0]
        noise = self.sample_normal(z.shape, "z_t", self.eval_noise_seed)
        if self.training:
            generators = self._generators(batch, "timestep", self.eval_noise_seed)
            if generators is None:
                return torch.randint(*self.train_timesteps, (batch,), device=z.device), torch.randn_like(z)
            timesteps = torch.cat([torch.randint(*self.train_timesteps, (1,), generator=generator)
                                   for generator in generators])
            return timesteps.to(z.device), noise.to(z.device, z.dtype)
        return torch.full((batch,), self.eval_timestep, device=z.device, dtype=torch.long), noise.to(z.device, z.dtype)

    def add_noise(self, z: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return self.scheduler.add_noise(z, noise, timesteps.to(z.device))

    @torch.no_grad()
    def forward(self, z: torch.Tensor, text_states: torch.Tensor, timesteps: torch.Tensor | None = None,
                noise: torch.Tensor | None = None, blocks: Sequence[int] | None = None) -> dict[int, torch.Tensor]:
        """Features of `blocks` (default: the configured ones) for clean latents z (noised here)."""
        if timesteps is None or noise is None:
            sampled_timesteps, sampled_noise = self.sample_timesteps_and_noise(z)
            timesteps = sampled_timesteps if timesteps is None else timesteps
            noise = sampled_noise if noise is None else noise
        noisy = self.add_noise(z, noise, timesteps)
        return self.features_of_noisy(noisy, timesteps, text_states, blocks)

    @torch.no_grad()
    def features_of_noisy(self, noisy: torch.Tensor, timesteps: torch.Tensor, text_states: torch.Tensor,
                          blocks: Sequence[int] | None = None) -> dict[int, torch.Tensor]:
        """Run the frozen UNet on z_t up to the last wanted block and return the hooked outputs."""
        wanted = check_block_numbers(blocks) if blocks is not None else self.blocks
        last = max(wanted)
        features: dict[int, torch.Tensor] = {}

        def make_hook(number: int):
            def hook(_module, _inputs, output):
                features[number] = output[0] if isinstance(output, tuple) else output.sample
                if number == last:
                    raise _StopForward

            return hook

        handles = [self.unet.get_submodule(self.layout[number].name).register_forward_hook(make_hook(number))
                   for number in wanted]
        try:
            self.unet(noisy, timesteps, encoder_hidden_states=text_states)
        except _StopForward:
            pass
        finally:
            for handle in handles:
                handle.remove()
        missing = [number for number in wanted if number not in features]
        if missing:
            raise RuntimeError(f"LDM blocks {missing} produced no features (UNet forward did not reach them)")
        return {number: features[number] for number in wanted}
