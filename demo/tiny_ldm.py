"""Train a tiny latent diffusion model on the segmentation world, saved in the diffusers folder layout.

LD-ZNet (dissertation Ch. 3) needs a pretrained Stable Diffusion: its VAE for z, its CLIP text encoder, and
its text-conditioned UNet for the internal features. None can be downloaded here, so the miniature trains
its own, in the same three stages as SD, on its own "web" corpus (shape-world scenes drawn from seeds that
the segmentation data never uses, photo and illustration styles, one caption each):

1. an ``AutoencoderKL`` (x8 downsampling, 4 latent channels) with an L1 + small KL loss; the latent scaling
   factor is then set to 1 / std(z) as SD's 0.18215 was;
2. a CLIP-style text encoder (``CLIPTextModel``, 77 positions) trained contrastively against a small image
   tower on (image, caption) pairs (symmetric InfoNCE with a learned temperature), then frozen;
3. a text-conditioned ``UNet2DConditionModel`` with SD v1's topology (4 levels, 2 layers per block,
   16 spatial-attention modules) trained with the DDPM noise-prediction loss under SD's noise schedule,
   dropping 10 % of the captions to "" so the unconditional prediction exists (Fig 3.1 coarse masks).

The result is written with ``ldznet.stable_diffusion.save_diffusers_folder`` (plus the tiny CLIP BPE
tokenizer of ``ldznet.tiny_configs``) and is read back with ``ldznet.stable_diffusion.load_stable_diffusion``,
the loader used for a real SD v1.4 folder.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn
from tqdm.auto import tqdm

from common.checkpoints import write_json
from demo.worlds import shapes
from ldznet.stable_diffusion import (
    build_random_components,
    load_stable_diffusion,
    load_tokenizer,
    save_diffusers_folder,
)
from ldznet.tiny_configs import tiny_architecture, write_tiny_tokenizer

# Words of the shape world and of the CLIPSeg prompt templates: one token each in the tiny tokenizer (as in CLIP's
# vocabulary; a word left out is split into pieces that may spell another word: "colored" -> c o l o "red").
VOCABULARY = tuple(dict.fromkeys((
    *shapes.LANGUAGE_WORDS, "photo", "photograph", "image", "cropped", "good", "bad",
    *shapes.SHAPES, *shapes.COLORS, *shapes.STUFF,
)))


def build_corpus(seed: int, n_images: int, size: int, illustration_fraction: float) -> tuple[np.ndarray, list]:
    """(N, H, W, 3) uint8 images and their captions from the shape world (the LDM's "web" data)."""
    rng = np.random.default_rng(seed)
    images, captions = [], []
    for _ in tqdm(range(n_images), desc="tiny LDM corpus", leave=False):
        scene = shapes.sample_scene(rng, size)
        style = "illustration" if rng.random() < illustration_fraction else "photo"
        images.append(shapes.render(scene, style, rng))
        captions.append(shapes.caption(scene))
    return np.stack(images), captions


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def _batches(n: int, batch: int, steps: int, generator: torch.Generator):
    for _ in range(steps):
        yield torch.randint(0, n, (batch,), generator=generator)


def train_vae(vae, images: torch.Tensor, cfg: DictConfig, generator: torch.Generator) -> dict:
    """L1 reconstruction + KL on random crops (the VAE is fully convolutional)."""
    optimizer = torch.optim.Adam(vae.parameters(), lr=float(cfg.lr))
    crop = int(cfg.crop)
    size = images.shape[-1]
    vae.train()
    losses = []
    bar = tqdm(_batches(len(images), int(cfg.batch), int(cfg.steps), generator), total=int(cfg.steps),
               desc="tiny LDM: VAE", leave=False)
    for index in bar:
        top, left = (torch.randint(0, size - crop + 1, (2,), generator=generator) // 8 * 8).tolist()
        x = images[index][:, :, top:top + crop, left:left + crop]
        posterior = vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=generator)
        reconstruction = vae.decode(z).sample
        loss = (reconstruction - x).abs().mean() + float(cfg.kl_weight) * posterior.kl().mean() / x[0].numel()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
    vae.eval()
    with torch.no_grad():
        held = images[-min(64, len(images)):]
        rec = vae.decode(vae.encode(held).latent_dist.mode()).sample
        l1 = (rec - held).abs().mean().item()
        z = vae.encode(images[: min(256, len(images))]).latent_dist.mode()
    scaling = 1.0 / float(z.std())
    vae.register_to_config(scaling_factor=scaling)
    return {"vae_final_loss": float(np.mean(losses[-20:])), "vae_l1_last64": l1, "scaling_factor": scaling}


class ImageTower(nn.Module):
    """A small CNN image encoder, the partner of the text encoder in contrastive training (discarded)."""

    def __init__(self, width: int, out_dim: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, width, 3, 2, 1), nn.ReLU(), nn.Conv2d(width, 2 * width, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, 2, 1), nn.ReLU(), nn.Conv2d(2 * width, 2 * width, 3, 2, 1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(8 * width, out_dim))

    def forward(self, x):
        return self.net(x)


def tokenize(tokenizer, captions: list[str]) -> torch.Tensor:
    return tokenizer(captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids


def pooled_text(text_encoder, ids: torch.Tensor, eos_id: int) -> torch.Tensor:
    """The hidden state at the first end token (CLIP's pooled text feature)."""
    hidden = text_encoder(ids).last_hidden_state
    position = (ids == eos_id).int().argmax(dim=1)
    return hidden[torch.arange(ids.shape[0]), position]


def train_text_encoder(text_encoder, tokenizer, images: torch.Tensor, captions: list[str], cfg: DictConfig,
                       generator: torch.Generator) -> dict:
    """CLIP's symmetric contrastive loss on (image, caption) pairs; returns the held-out retrieval accuracy."""
    dim = text_encoder.config.hidden_size
    tower = ImageTower(int(cfg.image_width), dim)
    projection = nn.Linear(dim, dim, bias=False)
    logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
    params = [*text_encoder.parameters(), *tower.parameters(), *projection.parameters(), logit_scale]
    optimizer = torch.optim.AdamW(params, lr=float(cfg.lr), weight_decay=0.01)
    ids_all = tokenize(tokenizer, captions)
    eos_id = tokenizer.eos_token_id
    n_train = len(images) - int(cfg.held_out)
    text_encoder.train()
    losses = []
    bar = tqdm(_batches(n_train, int(cfg.batch), int(cfg.steps), generator), total=int(cfg.steps),
               desc="tiny LDM: text encoder (contrastive)", leave=False)
    for index in bar:
        t = F.normalize(projection(pooled_text(text_encoder, ids_all[index], eos_id)), dim=-1)
        v = F.normalize(tower(images[index]), dim=-1)
        logits = logit_scale.exp().clamp(max=100) * t @ v.T
        # identical captions in a batch are positives too
        same = (ids_all[index][:, None, :] == ids_all[index][None, :, :]).all(-1).float()
        target = same / same.sum(1, keepdim=True)
        loss = 0.5 * (-(target * logits.log_softmax(1)).sum(1).mean() - (target * logits.log_softmax(0)).sum(0).mean())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
    text_encoder.eval()
    with torch.no_grad():
        held = torch.arange(n_train, len(images))
        t = F.normalize(projection(pooled_text(text_encoder, ids_all[held], eos_id)), dim=-1)
        v = F.normalize(tower(images[held]), dim=-1)
        accuracy = (t @ v.T).argmax(1).eq(torch.arange(len(held))).float().mean().item()
    return {"text_final_loss": float(np.mean(losses[-20:])), "text_retrieval_top1_heldout": accuracy,
            "text_retrieval_chance": 1.0 / max(len(held), 1)}


def train_unet(unet, vae, text_encoder, tokenizer, scheduler, images: torch.Tensor, captions: list[str],
               cfg: DictConfig, generator: torch.Generator) -> dict:
    """DDPM epsilon-prediction loss on VAE latents, conditioned on the frozen text encoder's states."""
    with torch.no_grad():
        posterior = vae.encode(images).latent_dist
        mean, std = posterior.mean, posterior.std
        ids_all = tokenize(tokenizer, captions)
        empty = tokenize(tokenizer, [""])
    scale = float(vae.config.scaling_factor)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=float(cfg.lr), weight_decay=0.0)
    unet.train()
    losses = []
    steps = int(cfg.steps)
    bar = tqdm(_batches(len(images), int(cfg.batch), steps, generator), total=steps, desc="tiny LDM: UNet (DDPM)",
               leave=False)
    for index in bar:
        z = scale * (mean[index] + std[index] * torch.randn(mean[index].shape, generator=generator))
        ids = ids_all[index].clone()
        drop = torch.rand(len(index), generator=generator) < float(cfg.uncond_prob)
        ids[drop] = empty
        with torch.no_grad():
            context = text_encoder(ids).last_hidden_state
        noise = torch.randn(z.shape, generator=generator)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (len(index),), generator=generator)
        noisy = scheduler.add_noise(z, noise, t)
        loss = F.mse_loss(unet(noisy, t, context).sample, noise)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
    unet.eval()
    return {"unet_first_loss": float(np.mean(losses[:20])), "unet_final_loss": float(np.mean(losses[-20:]))}


def architecture(cfg: DictConfig) -> dict:
    """The tiny SD configs of ``ldznet.tiny_configs`` with the sizes of the demo config."""
    arch = tiny_architecture(VOCABULARY)  # start/end token ids of the tokenizer written with VOCABULARY
    arch["vae"].update(OmegaConf.to_container(cfg.vae.arch, resolve=True))
    arch["vae"]["sample_size"] = int(cfg.data.size)
    arch["text_encoder"].update(OmegaConf.to_container(cfg.text.arch, resolve=True))
    arch["unet"].update(OmegaConf.to_container(cfg.unet.arch, resolve=True))
    arch["unet"]["cross_attention_dim"] = arch["text_encoder"]["hidden_size"]
    arch["unet"]["sample_size"] = int(cfg.data.size) // 8
    return arch


def train_tiny_ldm(cfg: DictConfig, out_dir: str | Path) -> dict:
    """Train all three parts and write ``out_dir`` in the diffusers layout; returns the training record."""
    out_dir = Path(out_dir)
    seed = int(cfg.seed)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    images_np, captions = build_corpus(seed + 10_000, int(cfg.data.n_images), int(cfg.data.size),
                                       float(cfg.data.illustration_fraction))
    images = _to_tensor(images_np)
    write_tiny_tokenizer(out_dir / "tokenizer", words=VOCABULARY)
    tokenizer = load_tokenizer(out_dir / "tokenizer")
    components = build_random_components(architecture(cfg), tokenizer)
    record = {"n_images": len(images), "image_size": int(cfg.data.size), "captions_example": captions[:3]}
    record |= train_vae(components.vae, images, cfg.vae, generator)
    record |= train_text_encoder(components.text_encoder, tokenizer, images, captions, cfg.text, generator)
    record |= train_unet(components.unet, components.vae, components.text_encoder, tokenizer, components.scheduler,
                         images, captions, cfg.unet, generator)
    save_diffusers_folder(components, out_dir, write_tokenizer=False)
    write_json(out_dir / "demo_training.json", record)
    return record


def load_tiny_ldm(folder: str | Path):
    """Read the folder back through the real Stable Diffusion loader (the same call as for SD v1.4)."""
    return load_stable_diffusion(folder)
