"""Parameter counts of a task's networks: `python -m sharingan.summary --task depth [key=value ...]`.

Prints one `name: count` line per network (paper sizes by default: depth G ~3.12 M, T ~54.56 M, D ~19.93 M).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from torch import nn

from common.config import REPO_ROOT, load_config
from sharingan.tasks import load_task


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def main(argv: Sequence[str] | None = None) -> dict[str, int]:
    parser = argparse.ArgumentParser(prog="python -m sharingan.summary", description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True)
    parser.add_argument("--config", default=None, help="experiment YAML (default: the task's pipeline config)")
    args, overrides = parser.parse_known_args(argv)
    task = load_task(args.task)
    cfg = load_config(args.config or REPO_ROOT / task.PIPELINE_CONFIG, overrides)
    counts = {name: parameter_count(module) for name, module in task.build_networks(cfg).items()}
    for name, count in counts.items():
        print(f"{name}: {count}")
    return counts


if __name__ == "__main__":
    main(sys.argv[1:])
