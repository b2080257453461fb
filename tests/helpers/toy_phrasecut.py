"""A toy PhraseCut in the real VGPhraseCut_v0 format, for smoke tests of the whole LD-ZNet chain."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ldznet.data.phrasecut import write_phrasecut_split

TOY_SHAPES = (("red", (220, 40, 40)), ("blue", (40, 60, 220)), ("green", (40, 200, 60)))


def write_toy_phrasecut(root: str | Path, samples_per_split: int = 6, size: int = 64, seed: int = 0,
                        splits=("train", "val", "test")) -> Path:
    """A few images with one coloured square on grey noise, phrase "<colour> square", in VGPhraseCut_v0 format."""
    rng = np.random.default_rng(seed)
    next_id = 1000
    for split in splits:
        samples = []
        for _ in range(samples_per_split):
            image = rng.integers(90, 140, size=(size, size, 3), dtype=np.uint8)
            colour_name, colour = TOY_SHAPES[int(rng.integers(len(TOY_SHAPES)))]
            side = int(rng.integers(size // 4, size // 2))
            x0, y0 = (int(v) for v in rng.integers(0, size - side, size=2))
            image[y0:y0 + side, x0:x0 + side] = colour
            square = [[x0, y0], [x0 + side, y0], [x0 + side, y0 + side], [x0, y0 + side]]
            samples.append({"image_id": next_id, "image": image,
                            "phrases": [{"phrase": f"{colour_name} square", "instances": [[square]]}]})
            next_id += 1
        write_phrasecut_split(root, split, samples)
    return Path(root)
