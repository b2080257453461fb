"""Parameter counts per part, without loading weights: `python -m ldznet.summary --variant V --size {tiny,sd}`.

The model is built on PyTorch's meta device (no memory, no weights), so the SD-size counts are instant.
One `part.trainable: count` / `part.frozen: count` line per part, then `trainable: N` and `frozen: N`.
Reference (docs/ref-ldznet.md §2.7): the frozen SD UNet has 859.52 M parameters; LD-ZNet has 925.88 M
trainable ones (the dissertation's "925M trainable parameters").
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import torch

from ldznet.config import model_defaults
from ldznet.models import VARIANTS, build_segmenter, parameter_counts
from ldznet.stable_diffusion import build_random_components

IMAGE_SIZES = {"sd": 384, "tiny": 64}


def summarize(variant: str, size: str = "sd") -> dict[str, dict[str, int]]:
    """{part: {"trainable": n, "frozen": n}} for `variant` at `size` (built on the meta device)."""
    with torch.device("meta"):
        components = build_random_components(size)
        model = build_segmenter(model_defaults(variant=variant, image_size=IMAGE_SIZES[size],
                                               gradient_checkpointing=False), components)
    return parameter_counts(model)


def format_summary(counts: dict[str, dict[str, int]]) -> str:
    lines = []
    for part, entry in counts.items():
        lines += [f"{part}.{kind}: {entry[kind]}" for kind in ("trainable", "frozen") if entry[kind]]
    trainable = sum(entry["trainable"] for entry in counts.values())
    frozen = sum(entry["frozen"] for entry in counts.values())
    lines += [f"trainable: {trainable}", f"frozen: {frozen}"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ldznet.summary", description=__doc__.split("\n")[0])
    parser.add_argument("--variant", choices=VARIANTS, required=True)
    parser.add_argument("--size", choices=tuple(IMAGE_SIZES), default="sd")
    args = parser.parse_args(argv)
    print(format_summary(summarize(args.variant, args.size)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
