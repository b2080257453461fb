"""Fig 3.1: a coarse segmentation from a pretrained LDM, with no training at all (dissertation §3.1).

For an image x and a prompt c: z = 0.18215 x E(x) (posterior mean), one noise draw eps, z_t = q(z_t | z) at
t = 400, then the per-pixel L2 norm over the 4 latent channels of

    eps_theta(z_t, t, c) - eps_theta(z_t, t, "")

(the same z_t for both passes; "" is SD's unconditional prompt). Where the text changes the noise estimate
most is where the prompted object is: the map is a coarse mask (latent resolution, upsampled for display).

    python -m ldznet.analysis.coarse_masks --stable-diffusion PATH --image IMAGE_OR_FOLDER \
        --prompt "A picture of an astronaut" --out DIR [--timestep 400] [--seed 0] [--image-size 512]

Writes `<image>__<prompt>_heat.png` (normalised map, magma), `<image>__<prompt>_overlay.png` (heat map over
the image) and `<image>__<prompt>_mask_overlay.png` (map above its mean, in red, via common.viz.overlay_mask).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from common.images import list_images, read_rgb
from common.viz import overlay_mask, save_png
from ldznet.models.text_conditioning import FrozenTextConditioning
from ldznet.predict import prepare_image, slug
from ldznet.stable_diffusion import StableDiffusionComponents, load_stable_diffusion

log = logging.getLogger(__name__)


@torch.no_grad()
def coarse_mask(components: StableDiffusionComponents, images: torch.Tensor, prompts: Sequence[str],
                timestep: int = 400, seed: int = 0) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1] -> (B, H/8, W/8) map ||eps(z_t, t, c) - eps(z_t, t, "")||_2 (same z_t)."""
    text = FrozenTextConditioning(components.tokenizer, components.text_encoder)
    device = images.device
    latent = components.vae.encode(images).latent_dist.mean * components.vae.config.scaling_factor
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(seed)).to(device)
    timesteps = torch.full((images.shape[0],), int(timestep), dtype=torch.long, device=device)
    noisy = components.scheduler.add_noise(latent, noise, timesteps)
    conditional = components.unet(noisy, timesteps, encoder_hidden_states=text(list(prompts))).sample
    unconditional = components.unet(noisy, timesteps, encoder_hidden_states=text([""] * len(prompts))).sample
    return (conditional - unconditional).norm(dim=1)


def heat_overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend a magma colour map of `heat` (in [0, 1], image size) over the uint8 RGB image."""
    colour = cv2.cvtColor(cv2.applyColorMap((heat * 255 + 0.5).astype(np.uint8), cv2.COLORMAP_MAGMA),
                          cv2.COLOR_BGR2RGB)
    return (image * (1 - alpha) + colour * alpha + 0.5).astype(np.uint8)


def write_coarse_masks(components: StableDiffusionComponents, images: Sequence[Path], prompts: Sequence[str],
                       out: str | Path, timestep: int = 400, seed: int = 0, image_size: int = 512,
                       device: str = "cpu") -> list[Path]:
    out = Path(out)
    written = []
    for path in tqdm(images, desc="coarse masks", unit="image"):
        image = read_rgb(path, log=log)
        tensor = prepare_image(image, image_size).to(device)
        for prompt in prompts:
            heat = coarse_mask(components, tensor, [prompt], timestep, seed)[None]
            heat = F.interpolate(heat, size=image.shape[:2], mode="bilinear", align_corners=False)[0, 0]
            heat = (heat / heat.max().clamp_min(1e-12)).cpu().numpy()
            stem = f"{path.stem}__{slug(prompt)}"
            written.append(save_png(out / f"{stem}_heat.png", cv2.cvtColor(cv2.applyColorMap(
                (heat * 255 + 0.5).astype(np.uint8), cv2.COLORMAP_MAGMA), cv2.COLOR_BGR2RGB)))
            written.append(save_png(out / f"{stem}_overlay.png", heat_overlay(image, heat)))
            written.append(save_png(out / f"{stem}_mask_overlay.png", overlay_mask(image, heat > heat.mean())))
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ldznet.analysis.coarse_masks",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--stable-diffusion", required=True, help="diffusers folder or sd-v1-4.ckpt")
    parser.add_argument("--architecture", default="sd", help="single-file only: sd | tiny | config folder")
    parser.add_argument("--tokenizer-path", default=None, help="single-file only: CLIP tokenizer folder")
    parser.add_argument("--image", required=True, help="an image file or a folder of images")
    parser.add_argument("--prompt", required=True, action="append", help="text prompt (repeat for several)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--timestep", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=512, help="side of the square of equal area")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    components = load_stable_diffusion(args.stable_diffusion, args.architecture, args.tokenizer_path)
    for module in (components.unet, components.vae, components.text_encoder):
        module.to(args.device)
    written = write_coarse_masks(components, list_images(args.image), args.prompt, args.out, args.timestep,
                                 args.seed, args.image_size, args.device)
    print(f"wrote {len(written)} files to {args.out} (t = {args.timestep}, sha256 of SD files in the record: "
          f"{len(components.record.get('sha256') or {})})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
