"""Train one Chapter 3 segmenter: `python -m ldznet.train experiments/chapter3/ldznet.yaml [key=value ...]`.

Writes `runs/chapter3/<experiment>/<timestamp>/` (common.runs): config.yaml, env.json, tb/ (loss curves,
learning rate, validation metrics, mask overlays), checkpoints/ (last.ckpt, best.ckpt by val/miou_best), and
`segmenter.pt`: the final trainable + EMA weights, loadable with `ldznet.checkpoints.load_segmenter`.
`metrics.json` records the learning rate actually used, the steps run, the final validation metrics and the
sha256 of the Stable Diffusion files.
"""

from __future__ import annotations

import datetime
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from common.config import load_config, parse_cli
from common.runs import start_run
from common.trainer import build_trainer
from ldznet.data import build_dataset
from ldznet.lit_module import SegmenterLitModule

CHAPTER = "chapter3"
TIMESTAMP_VARIABLE = "LDZNET_RUN_TIMESTAMP"


def build_loaders(cfg: DictConfig) -> tuple[DataLoader, DataLoader | None]:
    data = cfg.data
    train_set = build_dataset(data.train, limit=data.get("train_limit"))
    if len(train_set) == 0:
        raise ValueError(f"training set {data.train.name} ({data.train.root}, split {data.train.split}) is empty")
    workers = int(data.num_workers)
    train_loader = DataLoader(train_set, batch_size=int(data.batch_size), shuffle=True, num_workers=workers,
                              drop_last=len(train_set) >= int(data.batch_size), persistent_workers=workers > 0)
    val_loader = None
    if data.get("val") is not None:
        val_set = build_dataset(data.val, limit=data.get("val_limit"))
        val_loader = DataLoader(val_set, batch_size=int(data.batch_size), shuffle=False, num_workers=workers)
    return train_loader, val_loader


def shared_timestamp() -> str:
    """One run-folder timestamp for all DDP ranks: Lightning starts ranks > 0 as copies of this process
    with its environment, so rank 0 publishes the timestamp there before `fit`."""
    if int(os.environ.get("LOCAL_RANK", "0")) > 0 and TIMESTAMP_VARIABLE in os.environ:
        return os.environ[TIMESTAMP_VARIABLE]
    timestamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    os.environ[TIMESTAMP_VARIABLE] = timestamp
    return timestamp


def train(cfg: DictConfig, components=None, root: str | Path = "runs") -> Path:
    """Fit `cfg` (a composed chapter-3 experiment) and export `segmenter.pt`; returns the run folder."""
    experiment = cfg.get("experiment") or cfg.model.variant
    run_dir = start_run(cfg, CHAPTER, str(experiment), root=root, timestamp=shared_timestamp())
    train_loader, val_loader = build_loaders(cfg)
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    optim_cfg = OmegaConf.to_container(cfg.optim, resolve=True)
    module = SegmenterLitModule(model_cfg, optim_cfg, task=str(cfg.task),
                                log_images_every=int(cfg.log_images_every), components=components, run_dir=run_dir)
    monitor = "val/miou_best" if val_loader is not None else None
    trainer = build_trainer(cfg.trainer, run_dir, monitor=monitor, mode="max")
    # the module's on_train_end writes segmenter.pt, the final last.ckpt and metrics.json
    trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=val_loader,
                ckpt_path=cfg.get("resume") or None)
    if trainer.is_global_zero and not (run_dir / "segmenter.pt").is_file():
        raise RuntimeError(f"training ended without exporting {run_dir / 'segmenter.pt'}")
    return run_dir


def main(argv: Sequence[str] | None = None) -> int:
    experiment, overrides = parse_cli(sys.argv[1:] if argv is None else argv)
    cfg = load_config(experiment, overrides)
    run_dir = train(cfg)
    print(f"run folder: {run_dir}\nsegmenter: {run_dir / 'segmenter.pt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
