"""Convert the authors' released SharinGAN weights into a networks checkpoint:
`python -m sharingan.import_official --task depth|normals --checkpoint FILE --out networks.pt [key=value ...]`.

FILE is any released depth or face file (final models, pretrained G / T / RBDN, the bare SfSNet state dict; see
`sharingan.official`). The output is the format `sharingan.eval`, `sharingan.predict` and `init.generator=` /
`init.task_network=` read; its stored config is the task's pipeline config (or `--config`) with the official
network sizes, so `python -m sharingan.eval --checkpoint networks.pt data.kitti.root=...` evaluates it.
`key=value` overrides (e.g. data roots) go into that stored config.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from common.config import load_config
from sharingan.official import TASKS, describe, import_official


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m sharingan.import_official", description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True, choices=TASKS)
    parser.add_argument("--checkpoint", required=True, help="an official .pth.tar / .pth file")
    parser.add_argument("--out", required=True, help="networks checkpoint to write (e.g. networks.pt)")
    parser.add_argument("--config", default=None, help="config to store (default: the task's pipeline config)")
    args, overrides = parser.parse_known_args(argv)
    cfg = load_config(args.config, overrides) if args.config else None
    out, report = import_official(args.checkpoint, args.task, args.out, cfg, () if cfg is not None else overrides)
    print(describe(report))
    print(f"networks checkpoint written to {out}")
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
