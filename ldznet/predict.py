"""Segment images with a trained segmenter: a mask and an overlay per (image, prompt).

    python -m ldznet.predict --checkpoint runs/chapter3/ldznet/<run>/segmenter.pt \
        --image photo.jpg|folder/ --prompt "hanging clock" [--prompt "castle"] --out predictions/

Non-square images are handled as the official LD-ZNet demos do (docs/ref-ldznet.md §5): resized with PIL
LANCZOS, aspect ratio kept, area about image_size^2 (384^2), both sides floored to a multiple of 64. The
prediction is resized back to the original size. Writes `<image>__<prompt>_mask.png` (0/255 at
`--threshold`), `<image>__<prompt>_probability.png` (sigmoid x 255) and `<image>__<prompt>_overlay.png`.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from common.images import list_images, load_image_rgb
from common.viz import overlay_mask, save_png
from ldznet.data.aigi import keep_aspect_size


def prepare_image(image: np.ndarray, image_size: int = 384) -> torch.Tensor:
    """HxWx3 uint8 -> (1, 3, h, w) in [-1, 1] at the demo size (LANCZOS, aspect kept, sides multiple of 64)."""
    height, width = image.shape[:2]
    new_height, new_width = keep_aspect_size(height, width, image_size, 64)
    resized = np.asarray(Image.fromarray(image).resize((new_width, new_height), Image.Resampling.LANCZOS))
    return torch.from_numpy(resized.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1.0


@torch.no_grad()
def predict_probability(model: torch.nn.Module, image: np.ndarray, prompt: str, image_size: int = 384,
                        device: str | torch.device = "cpu") -> np.ndarray:
    """Foreground probability (H, W) at the original image size."""
    tensor = prepare_image(image, image_size).to(device)
    logits = model(tensor, [prompt])
    probability = torch.sigmoid(logits.float())
    probability = F.interpolate(probability, size=image.shape[:2], mode="bilinear", align_corners=False)
    return probability[0, 0].cpu().numpy()


def slug(text: str) -> str:
    return re.sub(r"[^a-zA-Z0-9]+", "_", text).strip("_")[:60] or "empty"


def predict(model: torch.nn.Module, images: Sequence[Path], prompts: Sequence[str], out: str | Path,
            image_size: int = 384, threshold: float = 0.5, device: str | torch.device = "cpu") -> list[Path]:
    empty = [index for index, prompt in enumerate(prompts) if not str(prompt).strip()]
    if empty:
        raise ValueError(f"empty prompt (prompt number {empty[0] + 1}): give the text to segment, "
                         "e.g. --prompt 'red car'")
    out = Path(out)
    written = []
    for path in tqdm(images, desc="predict", unit="image"):
        image, note = load_image_rgb(path)
        if note:
            tqdm.write(f"note: {note}")
        for prompt in prompts:
            probability = predict_probability(model, image, prompt, image_size, device)
            mask = probability > threshold
            stem = f"{path.stem}__{slug(prompt)}"
            written.append(save_png(out / f"{stem}_mask.png", mask.astype(np.uint8) * 255))
            written.append(save_png(out / f"{stem}_probability.png",
                                    (probability * 255 + 0.5).astype(np.uint8)))
            written.append(save_png(out / f"{stem}_overlay.png", overlay_mask(image, mask)))
    return written


def main(argv: Sequence[str] | None = None) -> int:
    from ldznet.checkpoints import load_segmenter

    parser = argparse.ArgumentParser(prog="python -m ldznet.predict", description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, help="segmenter.pt or a last/best.ckpt of ldznet.train")
    parser.add_argument("--image", required=True, help="an image file or a folder of images")
    parser.add_argument("--prompt", required=True, action="append", help="text prompt (repeat for several)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--image-size", type=int, default=None,
                        help="side of the square of equal area (default: the model's training size)")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--stable-diffusion", default=None, help="SD path, when moved since training")
    args = parser.parse_args(argv)
    model = load_segmenter(args.checkpoint, device=args.device, stable_diffusion_path=args.stable_diffusion)
    image_size = args.image_size or int(model.checkpoint_info["model"]["image_size"])
    written = predict(model, list_images(args.image), args.prompt, args.out, image_size, args.threshold, args.device)
    print(f"wrote {len(written)} files to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
