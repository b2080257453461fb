"""Run a SharinGAN checkpoint on images: `python -m sharingan.predict --checkpoint C --input IMAGE_OR_FOLDER
--out DIR`. The task stored in the checkpoint decides what is written (depth: a colourised PNG and a 16-bit
metric PNG, metres x 256, per image)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from common.images import list_images
from sharingan.checkpoints import load_networks
from sharingan.tasks import load_task


def main(argv: Sequence[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(prog="python -m sharingan.predict", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--input", required=True, help="an image or a folder of images")
    parser.add_argument("--out", required=True)
    parser.add_argument("--task", default=None, help="refuse a checkpoint of another task")
    args, overrides = parser.parse_known_args(argv)
    networks, cfg, payload = load_networks(args.checkpoint, args.task, overrides)
    written = load_task(payload["task"]).predict(cfg, networks, list_images(args.input), Path(args.out))
    print(f"wrote {len(written)} files to {args.out}")
    return written


if __name__ == "__main__":
    main(sys.argv[1:])
