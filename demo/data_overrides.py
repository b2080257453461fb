"""The config overrides that point each chapter's experiments at the generated worlds (used by the chapter
stages of `demo.plan` and by the floors of `demo.floors`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from common.config import load_config
from common.resilience import resolve_resume


def depth_data_overrides(world: Path) -> list[str]:
    kitti = world / "kitti"
    return [f"data.vkitti.root={world / 'vkitti'}", "data.vkitti.version=1",
            f"data.vkitti.train_lists=[{world / 'vkitti' / 'trainA.txt'}]",
            f"data.kitti.root={kitti}", f"data.kitti.train_list={kitti / 'train.txt'}",
            f"data.kitti.val_list={kitti / 'val.txt'}", f"data.kitti.test_list={kitti / 'test.txt'}",
            f"data.make3d.root={world / 'make3d'}"]


def faces_data_overrides(world: Path) -> list[str]:
    return [f"data.synthetic_root={world / 'sfsnet'}", f"data.celeba_root={world / 'celeba'}",
            f"data.photoface_root={world / 'photoface'}", f"data.multipie_root={world / 'multipie'}"]


EVAL_SETS = ("phrasecut", "aigi", "refcoco", "refcoco_plus", "refcocog")


def ldznet_data_overrides(world: Path, ldm: Path) -> list[str]:
    roots = {"phrasecut": world / "phrasecut", "aigi": world / "aigi", "refcoco": world / "refer",
             "refcoco_plus": world / "refer", "refcocog": world / "refer"}
    return [f"model.stable_diffusion.path={ldm}", f"data.train.root={roots['phrasecut']}",
            f"data.val.root={roots['phrasecut']}"] + [
        f"pipeline.evaluation.datasets.{name}.root={roots[name]}" for name in EVAL_SETS]


def ldznet_seed_config(ctx: Any, seed: int, out: Path):
    """The Chapter-3 config of a demo stage (`ctx.config`: config path + overrides) for one training seed, on
    the shape world and the tiny LDM, with the pipeline's outputs under `out` (used by the `ldznet_train`,
    `ldznet` and segmentation-floor stages)."""
    c = ctx.config
    world, ldm = ctx.path_of("world_shapes"), ctx.path_of("tiny_ldm") / "stable_diffusion"
    overrides = list(c["overrides"]) + ldznet_data_overrides(world, ldm) + [
        f"pipeline.out={out / 'pipeline'}", f"pipeline.runs_root={out / 'runs'}", f"seed={seed}"]
    return load_config(c["config"], overrides)


def continue_chapter3_part(ctx: Any, stage: str, part: str, cfg: Any) -> None:
    """With `continue_from` in the stage's config (demo key `continue_from`: a finished run folder of the same
    plan), set `cfg.resume` to the newest checkpoints/last.ckpt of the same stage part there, so that this part
    trains on from it (ldznet.train's resume: weights, optimiser, EMA, scheduler, data position) to its own,
    longer `schedule.train_samples`. From a run's final checkpoint this is not bit-identical to an uninterrupted
    longer run (Lightning closed the partial epoch at the stop). A missing checkpoint raises naming the folder."""
    source = ctx.config.get("continue_from")
    if not source:
        return
    experiment = str(cfg.get("experiment") or cfg.model.variant)
    cfg.resume = str(resolve_resume("last", Path(source) / stage / part / "runs" / "chapter3" / experiment))


def evaluated_checkpoint(run: Mapping, weights: str | None) -> str:
    """The file a Chapter-3 training part's model is evaluated from: its segmenter.pt (`final`, default) or its
    `checkpoints/best.ckpt` (`best`; demo.plan.chapter3_weights). A missing best.ckpt raises naming the file."""
    if (weights or "final") == "final":
        return str(run["segmenter"])
    best = Path(run["run_dir"]) / "checkpoints" / "best.ckpt"
    if not best.is_file():
        raise FileNotFoundError(f"chapter3_weights=best: {best} is missing (the run validated no point?)")
    return str(best)
