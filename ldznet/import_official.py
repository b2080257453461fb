"""Turn the authors' released `LDZNet_txt2mask.ckpt` into a `segmenter.pt` for `ldznet.eval` / `ldznet.predict`.

    python -m ldznet.import_official --checkpoint LDZNet_txt2mask.ckpt --stable-diffusion PATH --out segmenter.pt \
        [--weights ema|raw] [--tokenizer DIR] [--frozen-from-checkpoint [--frozen-out DIR]]

The segmentation UNet comes from the checkpoint (EMA weights by default, as the official inference uses them);
the frozen VAE, CLIP text encoder and LDM UNet from `--stable-diffusion` (a diffusers SD v1.4 folder, or
`sd-v1-4-full-ema.ckpt` with `--tokenizer` — the authors' choice for the frozen LDM), or, with
`--frozen-from-checkpoint`, from the checkpoint itself (written as a diffusers folder beside `--out`).
Nothing in the checkpoint is executed while reading it. Conventions that differ from the official script:
`ldznet/official.py` and docs/chapter3-models.md.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ldznet.official import WEIGHTS, import_official


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ldznet.import_official", description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, help="the released LDZNet_txt2mask.ckpt")
    parser.add_argument("--stable-diffusion", dest="stable_diffusion",
                        help="SD v1.4: diffusers folder or original .ckpt (frozen VAE, CLIP, LDM UNet)")
    parser.add_argument("--out", required=True, help="segmenter file to write (e.g. segmenter.pt)")
    parser.add_argument("--weights", choices=WEIGHTS, default="ema",
                        help="segmentation UNet weights: the EMA copy (default, as the official inference) or raw")
    parser.add_argument("--tokenizer", help="folder with CLIP's vocab.json + merges.txt (needed with a .ckpt SD "
                                            "or --frozen-from-checkpoint without a diffusers folder)")
    parser.add_argument("--frozen-from-checkpoint", dest="frozen_from_checkpoint", action="store_true",
                        help="take VAE, CLIP and the frozen LDM UNet from the checkpoint (if it holds them)")
    parser.add_argument("--frozen-out", dest="frozen_out",
                        help="with --frozen-from-checkpoint: where to write them "
                             "(default <out stem>_stable_diffusion/)")
    parser.add_argument("--architecture", default="sd", help=argparse.SUPPRESS)  # "tiny" in tests
    parser.add_argument("--no-hash", dest="hash_files", action="store_false", help="skip the sha256 of the inputs")
    args = parser.parse_args(argv)
    if args.stable_diffusion is None and not args.frozen_from_checkpoint:
        parser.error("give --stable-diffusion PATH (or --frozen-from-checkpoint with --tokenizer)")
    model = import_official(args.checkpoint, args.out, args.stable_diffusion, weights=args.weights,
                            tokenizer_path=args.tokenizer, architecture=args.architecture,
                            frozen_from_checkpoint=args.frozen_from_checkpoint, frozen_out=args.frozen_out,
                            hash_files=args.hash_files)
    info = model.official_info
    print(f"imported {info['unet_keys']} segmentation UNet tensors ({info['weights']} weights, read with "
          f"{info['reader']}; global_step {info['global_step']}, EMA updates {info['ema_num_updates']})")
    if info["skipped_objects"]:
        print("skipped non-tensor objects (not executed): " + ", ".join(info["skipped_objects"]))
    print(f"frozen parts from {model.checkpoint_info['stable_diffusion_record'].get('path')}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
