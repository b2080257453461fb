"""Run folders, seeding and the environment record.

Every training or evaluation run gets `runs/<chapter>/<experiment>/<timestamp>/` holding:
`config.yaml` (resolved), `env.json` (package versions, git sha, dirty flag, device), `metrics.json`,
`checkpoints/` and `tb/` (TensorBoard).
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import os
import platform
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from common.checkpoints import write_json

PACKAGES = (
    "torch", "torchvision", "pytorch-lightning", "torchmetrics", "diffusers", "transformers", "kornia",
    "opencv-python", "h5py", "omegaconf", "tensorboard", "safetensors", "scipy", "numpy",
)
REPO_ROOT = Path(__file__).resolve().parent.parent


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed Python, NumPy and torch (all devices); optionally ask for deterministic kernels.

    Determinism uses `torch.use_deterministic_algorithms(True, warn_only=True)`: our own networks become
    repeatable, while the few ops without a deterministic kernel (some in the diffusion UNet) only warn.
    """
    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def git_state(root: Path = REPO_ROOT) -> dict[str, Any]:
    """The commit sha and whether the work tree has uncommitted changes (None outside a git checkout)."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        status = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True,
                                timeout=10)
    except (OSError, subprocess.SubprocessError):
        return {"sha": None, "dirty": None}
    if sha.returncode != 0:
        return {"sha": None, "dirty": None}
    return {"sha": sha.stdout.strip(), "dirty": bool(status.stdout.strip())}


def environment_record() -> dict[str, Any]:
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    cuda = torch.cuda.is_available()
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": versions,
        "git": git_state(),
        "cuda_available": cuda,
        "cuda_version": torch.version.cuda,
        "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else ["cpu"],
        "cpu_threads": torch.get_num_threads(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def run_dir_for(chapter: str, experiment: str, root: str | Path = "runs", timestamp: str | None = None) -> Path:
    timestamp = timestamp or _dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    return Path(root) / chapter / experiment / timestamp


def start_run(cfg: DictConfig, chapter: str, experiment: str, root: str | Path = "runs",
              timestamp: str | None = None, seed: int | None = None) -> Path:
    """Create the run folder, save the resolved config and env.json, and seed everything.

    The seed is `seed`, else `cfg.seed` when present. Returns the run folder.
    """
    from common.config import save_config

    run_dir = run_dir_for(chapter, experiment, root, timestamp)
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    (run_dir / "tb").mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    write_json(run_dir / "env.json", environment_record())
    if seed is None and "seed" in cfg:
        seed = int(cfg.seed)
    if seed is not None:
        seed_everything(seed, bool(cfg.get("deterministic", True)))
    return run_dir


def write_metrics(run_dir: str | Path, metrics: dict[str, Any]) -> Path:
    """Merge `metrics` into `run_dir/metrics.json` (atomic)."""
    path = Path(run_dir) / "metrics.json"
    current = json.loads(path.read_text()) if path.is_file() else {}
    current.update(metrics)
    write_json(path, current)
    return path
