"""ZNet: text-based segmentation on SD's latent space z (dissertation §3.2.1, Table 3.1).

The input image x in [-1, 1] is encoded by SD's frozen VAE, z = 0.18215 x posterior sample (the mean as an
option); an SD-initialised UNet (all of it trainable, including the timestep embedding) runs on z with
timestep 0, no noise added, and frozen CLIP text states as cross-attention context (docs/ref-ldznet.md §1).
The UNet's output convolution keeps only channel 0 of SD's 4-channel conv (1 output channel), and a small
transposed-convolution head brings the latent-size logit map back to the image size (x8). The loss is binary
cross-entropy with logits (no sigmoid in the model).

`ZNet` is also the base of RGBNet (another input stage) and LD-ZNet (LDM features injected into the UNet).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ldznet.models.ldm_features import PerSampleNoise
from ldznet.models.text_conditioning import FrozenTextConditioning, check_prompts

VAE_DOWNSAMPLING = 8
UNET_DOWNSAMPLING = 8  # three stride-2 levels in SD's UNet


def check_images(images: torch.Tensor, multiple: int = VAE_DOWNSAMPLING * UNET_DOWNSAMPLING) -> torch.Tensor:
    """(B, 3, H, W) float in [-1, 1] with H, W multiples of 64 (x8 VAE, then x8 in the UNet)."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a (B, 3, H, W) tensor, got {shape}")
    if not images.is_floating_point():
        raise ValueError(f"images must be float in [-1, 1], got dtype {images.dtype}")
    height, width = images.shape[-2:]
    if height % multiple or width % multiple:
        raise ValueError(f"image size {height}x{width} must be a multiple of {multiple} (resize, e.g. to 384x384)")
    return images


class LatentEncoder(PerSampleNoise, nn.Module):
    """Frozen SD VAE encoder: z = scaling_factor x (posterior sample | posterior mean); each sample's posterior
    draw from its own generator (`ldznet.models.ldm_features.per_sample_noise`, stream "posterior")."""

    def __init__(self, vae: nn.Module, latent: str = "sample", eval_seed: int = 0):
        super().__init__()
        if latent not in ("sample", "mean"):
            raise ValueError(f"model.latent must be 'sample' or 'mean', got {latent!r}")
        self.vae = vae.requires_grad_(False).eval()
        self.latent = latent
        self.scaling_factor = float(vae.config.scaling_factor)  # 0.18215 for SD v1
        self.eval_seed = eval_seed

    def train(self, mode: bool = True) -> LatentEncoder:
        super().train(mode)
        self.vae.eval()
        return self

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        posterior = self.vae.encode(images).latent_dist
        if self.latent == "mean":
            return self.scaling_factor * posterior.mean
        noise = self.sample_normal(posterior.mean.shape, "posterior", self.eval_seed)
        if noise is None:  # training without per-sample keys: the global generator
            return self.scaling_factor * posterior.sample()
        return self.scaling_factor * (posterior.mean + posterior.std * noise.to(posterior.mean))


class OutputHead(nn.Module):
    """1-channel latent-size map -> full-size logits: three (transposed conv x2, conv 3x3) stages (55 weights).

    Same layers as the released LD-ZNet code (docs/ref-ldznet.md §1.4): conv3x3, then 3 x [ConvT(k2, s2),
    conv3x3], SiLU between all of them, no final activation.
    """

    def __init__(self, stages: int = 3):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(1, 1, 3, padding=1)]
        for _ in range(stages):
            layers += [nn.SiLU(), nn.ConvTranspose2d(1, 1, 2, stride=2), nn.SiLU(), nn.Conv2d(1, 1, 3, padding=1)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(F.silu(x))


HEAD_INITS = ("pytorch", "unit_gain")


def initialise_head(head: OutputHead, mode: str, shift: float = 4.0) -> OutputHead:
    """Initialise the output head: "pytorch" (the released code: PyTorch's default init, left as built) or
    "unit_gain" (the head starts as nearest-neighbour upsampling of silu(x)).

    Why "unit_gain" exists (docs/demo-diagnosis.md, "Why every model starts on the plateau"): at PyTorch's
    default init the seven single-channel layers with SiLUs between them shrink the signal and its gradient to
    1e-8 - 1e-5 of what the unit-gain start passes, so every model starts at the constant mask and some never
    leave it (their head parks at SiLU's stationary point x = -1.28). "unit_gain" sets every conv to the
    identity (3x3 centre tap 1, 2x2 transposed conv all ones), shifts the first conv's output by +`shift` so
    every inner SiLU works where it is nearly the identity (sigmoid(4) = 0.98), and takes the shift off again
    in the last conv's bias. Same layers, same parameters; only the starting point differs.
    """
    if mode not in HEAD_INITS:
        raise ValueError(f"optim.head_init must be one of {HEAD_INITS}, got {mode!r}")
    if mode == "pytorch":
        return head
    convolutions = [layer for layer in head.layers if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d))]
    with torch.no_grad():
        for index, layer in enumerate(convolutions):
            if isinstance(layer, nn.ConvTranspose2d):
                nn.init.ones_(layer.weight)  # every output pixel copies its input pixel: nearest upsampling
            else:
                nn.init.dirac_(layer.weight)  # the identity convolution (centre tap 1)
            nn.init.constant_(layer.bias, shift if index == 0 else 0.0)
        nn.init.constant_(convolutions[-1].bias, -shift)
    return head


def reduce_to_one_output_channel(unet: nn.Module) -> nn.Module:
    """Replace the UNet's 4-channel output conv by a 1-channel one holding channel 0 of SD's weights."""
    old = unet.conv_out
    new = nn.Conv2d(old.in_channels, 1, old.kernel_size, padding=old.padding, device=old.weight.device,
                    dtype=old.weight.dtype)
    if old.weight.device.type != "meta":
        with torch.no_grad():
            new.weight.copy_(old.weight[:1])
            new.bias.copy_(old.bias[:1])
    unet.conv_out = new
    unet.register_to_config(out_channels=1)
    return unet


class ZNet(nn.Module):
    """Segmenter: forward(images (B,3,H,W) in [-1,1], prompts list[str]) -> logits (B,1,H,W)."""

    variant = "znet"

    def __init__(self, components, latent: str = "sample", gradient_checkpointing: bool = False,
                 copy_unet: bool = False, eval_seed: int = 0):
        super().__init__()
        self.text_conditioning = FrozenTextConditioning(components.tokenizer, components.text_encoder)
        self.build_input_stage(components, latent, eval_seed)
        unet = copy.deepcopy(components.unet) if copy_unet else components.unet
        self.unet = reduce_to_one_output_channel(unet.requires_grad_(True).train())
        self.head = OutputHead()
        self.gradient_checkpointing = gradient_checkpointing
        if gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()

    def build_input_stage(self, components, latent: str, eval_seed: int) -> None:
        self.latent_encoder = LatentEncoder(components.vae, latent, eval_seed)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Image -> the UNet's 4-channel input (the latent z here; RGBNet's stem output there)."""
        return self.latent_encoder(images)

    def condition_on_ldm(self, z: torch.Tensor, text_states: torch.Tensor) -> None:
        """Hook for LD-ZNet (sets the LDM tokens in the injected blocks); ZNet uses no LDM features."""

    def segment(self, z: torch.Tensor, text_states: torch.Tensor) -> torch.Tensor:
        """UNet at timestep 0 on (un-noised) z -> head -> logits at 8x the latent size."""
        timesteps = torch.zeros(z.shape[0], dtype=torch.long, device=z.device)
        out = self.unet(z, timesteps, encoder_hidden_states=text_states.to(z.dtype)).sample
        return self.head(out)

    def forward(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        images = check_images(images)
        prompts = check_prompts(prompts, images.shape[0])
        text_states = self.text_conditioning(prompts)
        z = self.encode(images)
        self.condition_on_ldm(z, text_states)
        return self.segment(z, text_states)
