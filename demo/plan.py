"""The miniature's stages: three worlds, the tiny LDM, then each chapter's own pipeline.

    world_shapes  world_faces  world_street      procedural data in the real formats (demo/worlds)
    tiny_ldm                                     the stand-in for Stable Diffusion v1.4 (demo/tiny_ldm.py)
    faces                                        sharingan.pipeline --task normals (Tables 2.3, 2.4)
    depth                                        sharingan.pipeline --task depth   (Tables 2.1, 2.2, 2.5, 2.6)
    floor_image_only                             the image-only segmentation floor, trained per seed
    ldznet_train                                 ldznet.train per (seed, model): RGBNet, ZNet, LD-ZNet, concat
    probe                                        ldznet.analysis.probe (Fig 3.4 block x timestep heat map)
    ldznet                                       ldznet.pipeline evaluating the trained models (Tables 3.1-3.4)
    floors_depth  floors_faces                   sanity floors through the chapters' evaluate + per-image values
    floors_segmentation                          all-foreground and image-only floors + per-sample IoU curves

A chapter stage runs its pipeline once per training seed (one *part* per seed; Chapter 3's training one part
per seed and model) on the world's files (roots and lists are passed as config overrides) and returns, per
seed, the metrics of every row; the report pairs them by seed. Each part is cached on its own: an interrupted
stage resumes at its first unfinished part, and with ``jobs`` > 1 independent parts and stages run at the
same time in worker processes (demo/stages.py). The list order is the priority order of that scheduling.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from common.config import EXPERIMENTS_ROOT, load_config
from demo import floors
from demo.data_overrides import (
    continue_chapter3_part,
    depth_data_overrides,
    evaluated_checkpoint,
    faces_data_overrides,
    ldznet_seed_config,
)
from demo.stages import Stage, StageContext, StageNotRunnable, plain, seed_of

DEMO_EXPERIMENTS = EXPERIMENTS_ROOT / "demo"


def seeds_of(cfg: DictConfig) -> list[int]:
    return [int(cfg.seed) + k for k in range(int(cfg.seeds))]


DEVICES = ("cpu", "cuda")

# What `device: cuda` changes in each chapter config: Lightning trains on one GPU (several worker processes,
# `jobs`, share it) and the chapters' own evaluation runs there too (Chapter 2's already does whenever a GPU is
# visible: eval.device auto). The tiny LDM's training (~3 CPU minutes) and the floors' per-image scoring stay on
# the CPU. Nothing is added for `device: cpu`, so CPU runs keep their stage keys (and their cached results).
CUDA_OVERRIDES = {
    "depth": ["trainer.accelerator=gpu", "trainer.devices=1"],
    "faces": ["trainer.accelerator=gpu", "trainer.devices=1"],
    "ldznet": ["trainer.accelerator=gpu", "trainer.devices=1", "pipeline.evaluation.device=cuda"],
    "probe": ["device=cuda"],
}


def device_of(cfg: DictConfig) -> str:
    """The demo config's `device` (cpu when absent), checked against DEVICES."""
    device = str(cfg.get("device") or "cpu")
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r} (demo config key `device`)")
    return device


def chapter_config(cfg: DictConfig, key: str) -> tuple[Path, list[str]]:
    """A chapter config of the demo: its path and overrides (the config's own, then the device's)."""
    path = DEMO_EXPERIMENTS / str(cfg[key])
    device = CUDA_OVERRIDES.get(key, []) if device_of(cfg) == "cuda" else []
    return path, [str(o) for o in cfg.overrides.get(key, [])] + device


def composed(path: Path, overrides: list[str]) -> Any:
    """The resolved chapter config (its content enters the stage key: edit the YAML, the stage re-runs)."""
    try:
        return plain(load_config(path, overrides))
    except Exception as error:  # noqa: BLE001 - a config that does not compose yet (missing chapter file)
        return {"unresolved": str(path), "overrides": overrides, "error": f"{type(error).__name__}: {error}"}


# Imports inside the stage functions, on purpose: `python -m demo --list` and every worker process (jobs > 1: it
# unpickles a stage function from this module) import this module, and must need neither the chapters (a missing
# one is reported "not run: missing chapter code") nor the other stages' code. Measured import costs on top of this
# module: the worlds ~0.08 s together (faces and shapes bring the chapters' format writers, sharingan.data and
# ldznet.data), demo.tiny_ldm ~3.4 s (ldznet.stable_diffusion), sharingan.pipeline ~3.5 s, ldznet.pipeline /
# ldznet.train / ldznet.analysis.probe ~4 s each.

# ----------------------------------------------------------------------------------------------- worlds

def run_world_street(ctx: StageContext) -> dict:
    from demo.worlds import street

    c = ctx.config
    size = tuple(c.size)
    root = ctx.out_dir
    workers = int(ctx.options.get("workers", 1))
    return {
        "vkitti": len(street.write_vkitti(root / "vkitti", int(c.vkitti.worlds), int(c.vkitti.frames), size,
                                          tuple(c.vkitti.variations), seed=int(c.seed), workers=workers)),
        "kitti": street.write_kitti(root / "kitti", {k: tuple(v) for k, v in c.kitti.items()}, size,
                                    seed=int(c.seed), workers=workers),
        "make3d": len(street.write_make3d(root / "make3d", int(c.make3d.n), tuple(c.make3d.size), seed=int(c.seed))),
    }


def run_world_faces(ctx: StageContext) -> dict:
    from demo.worlds import faces

    c = ctx.config
    root, size, seed = ctx.out_dir, int(c.size), int(c.seed)
    p, m = c.photoface, c.multipie
    return {
        "sfsnet": faces.write_sfsnet(root / "sfsnet", int(c.sfsnet), size, seed),
        "celeba": faces.write_celeba(root / "celeba", tuple(c.celeba), size, seed),
        "photoface": faces.write_photoface(root / "photoface", int(p.train_subjects), int(p.test_subjects),
                                           int(p.sessions), size, seed),
        "multipie": faces.write_multipie(root / "multipie", int(m.subjects), int(m.shots), tuple(m.canvas),
                                         int(m.face_size), seed),
    }


def run_world_shapes(ctx: StageContext) -> dict:
    from demo.worlds import shapes

    c = ctx.config
    root, size, seed = ctx.out_dir, int(c.size), int(c.seed)
    return {
        "phrasecut": shapes.write_phrasecut(root / "phrasecut", dict(c.phrasecut), size, seed),
        "aigi": shapes.write_aigi(root / "aigi", int(c.aigi), size, seed),
        "refer": shapes.write_refcoco(root / "refer", int(c.refcoco), size, seed),
    }


# ----------------------------------------------------------------------------------------------- tiny LDM

def run_tiny_ldm(ctx: StageContext) -> dict:
    from demo.tiny_ldm import load_tiny_ldm, train_tiny_ldm

    cfg = OmegaConf.create(ctx.config)
    record = train_tiny_ldm(cfg, ctx.out_dir / "stable_diffusion")
    load_tiny_ldm(ctx.out_dir / "stable_diffusion")  # must load back through the real SD loader
    return record | {"folder": str(ctx.out_dir / "stable_diffusion")}


# ----------------------------------------------------------------------------------------------- chapter 2

def _read_rows(summary: dict) -> dict[str, dict]:
    rows = {}
    for name, entry in summary.get("rows", {}).items():
        metrics_path = entry.get("metrics")
        if metrics_path and Path(metrics_path).is_file():
            rows[name] = json.loads(Path(metrics_path).read_text())
    return rows


def run_chapter2_seed(task: str, world_stage: str, overrides_for, ctx: StageContext, part: str, folder: Path) -> dict:
    """One training seed of a Chapter-2 stage: `sharingan.pipeline` (pretraining, every row, evaluation)."""
    from sharingan.pipeline import run_pipeline

    c = ctx.config
    overrides = list(c["overrides"]) + overrides_for(ctx.path_of(world_stage)) + [f"seed={seed_of(part)}"]
    summary = run_pipeline(task, c["config"], overrides, root=folder)
    return {"out_dir": str(summary["out_dir"]), "rows": _read_rows(summary), "tables": summary.get("tables", []),
            "checkpoints": {k: v.get("checkpoint") for k, v in summary["rows"].items()},
            "pretrained": summary.get("pretrained", {})}


def combine_seeds(ctx: StageContext, **extra) -> dict:
    return extra | {"seeds": {str(seed_of(part)): result for part, result in ctx.parts.items()}}


# ----------------------------------------------------------------------------------------------- chapter 3

# Chapter-3 training seconds per step on one CPU thread, relative to RGBNet, from the two 90-minute until-plateau
# studies' parts (docs/demo-study-notes.md, "The runs"): RGBNet ~0.125 s, ZNet ~0.15, LD-ZNet (either injection)
# ~0.17-0.18: the LDM-feature models run the frozen denoising UNet too. Only the order of the parts uses it.
CHAPTER3_STEP_COST = {"rgbnet": 1.0, "znet": 1.2, "ldznet": 1.4, "ldznet_concat": 1.4}


def ldznet_training_parts(seeds: list[int], variants: list[str]) -> list[str]:
    """ldznet_train's parts, "seed<seed>_<variant>", the costliest models first across the seeds: with `jobs`
    workers, long units first leave a shorter one-worker tail (longest-processing-time-first list scheduling).
    A run that stops at its plateau has no length known in advance, so the cost per step orders them (a variant
    not in CHAPTER3_STEP_COST counts as the costliest). Changes no number: each part trains alone, seeded by
    itself, and the evaluation reads its parts in the config's variant order (run_ldznet_seed)."""
    costliest = max(CHAPTER3_STEP_COST.values())
    order = sorted(variants, key=lambda variant: -CHAPTER3_STEP_COST.get(variant, costliest))  # stable
    return [f"seed{seed}_{variant}" for variant in order for seed in seeds]


def ldznet_variants(config: dict) -> list[str]:
    composed_config = config.get("composed") or {}
    return [str(v) for v in (composed_config.get("pipeline") or {}).get("variants", [])]


def run_ldznet_training(ctx: StageContext, part: str, folder: Path) -> dict:
    """One (training seed, variant) of Chapter 3: `ldznet.train` with the pipeline's per-variant config."""
    try:
        from ldznet.pipeline import variant_config
        from ldznet.train import train
    except ImportError as error:
        raise StageNotRunnable(f"ldznet.pipeline cannot be imported: {error}") from error
    variant = part.split("_", 1)[1]
    seed_cfg = ldznet_seed_config(ctx, seed_of(part), folder)
    cfg = variant_config(seed_cfg, variant)
    continue_chapter3_part(ctx, "ldznet_train", part, cfg)
    run_dir = train(cfg, root=str(seed_cfg.pipeline.runs_root))
    return {"variant": variant, "run_dir": str(run_dir), "segmenter": str(run_dir / "segmenter.pt")}


def run_ldznet_seed(ctx: StageContext, part: str, folder: Path) -> dict:
    """One training seed of Chapter 3: `ldznet.pipeline` evaluating the models `ldznet_train` trained for it."""
    try:
        from ldznet.pipeline import run_pipeline
    except ImportError as error:
        raise StageNotRunnable(f"ldznet.pipeline cannot be imported: {error}") from error
    seed = seed_of(part)
    runs = {run["variant"]: run for name, run in ctx.results["ldznet_train"]["parts"].items() if seed_of(name) == seed}
    trained = {variant: runs[variant] for variant in ldznet_variants(ctx.config)}  # the config's order, not the queue's
    cfg = ldznet_seed_config(ctx, seed, folder)
    evaluated = {variant: evaluated_checkpoint(run, ctx.config.get("chapter3_weights"))
                 for variant, run in trained.items()}
    cfg.pipeline.checkpoints = evaluated
    summary = run_pipeline(cfg)
    runs = {variant: {"run_dir": trained[variant]["run_dir"], "segmenter": evaluated[variant],
                      "trained_here": True} for variant in summary["runs"]}
    return {"out": str(folder / "pipeline"), "results": summary["results"], "runs": runs,
            "tables": summary.get("tables", [])}


def combine_parts(ctx: StageContext) -> dict:
    return {"parts": dict(ctx.parts)}


def run_probe(ctx: StageContext) -> dict:
    try:
        from ldznet.analysis.probe import run_probe as probe
    except ImportError as error:
        raise StageNotRunnable(f"ldznet.analysis.probe cannot be imported: {error}") from error
    c = ctx.config
    world, ldm = ctx.path_of("world_shapes"), ctx.path_of("tiny_ldm") / "stable_diffusion"
    overrides = list(c["overrides"]) + [f"stable_diffusion.path={ldm}", f"data.train.root={world / 'phrasecut'}",
                                        f"data.val.root={world / 'phrasecut'}", f"out={ctx.out_dir}",
                                        f"seed={c['seeds'][0]}"]
    result = probe(load_config(c["config"], overrides))
    return {"best": result["best"], "ap": result["ap"], "heat_map": str(ctx.out_dir / "probe_ap.png")}


# ----------------------------------------------------------------------------------------------- the plan

def continue_from(cfg: DictConfig) -> dict:
    """{"continue_from": absolute folder} when the demo config sets `continue_from`, else {}. It must differ
    from `out` (a stage clears its own part folders before it runs); a part whose checkpoint is missing there
    fails naming the folder searched (`demo.data_overrides.continue_chapter3_part`)."""
    source = cfg.get("continue_from")
    if not source:
        return {}
    source = Path(str(source)).resolve()
    if source == Path(str(cfg.out)).resolve():
        raise ValueError(f"continue_from ({source}) must differ from out: the stages clear their own folders")
    return {"continue_from": str(source)}


CHAPTER3_WEIGHTS = ("final", "best")


def chapter3_weights(cfg: DictConfig) -> dict:
    """{} for the default `chapter3_weights: final` (each Chapter-3 run's final EMA weights, segmenter.pt), or
    {"chapter3_weights": "best"}: each run's `checkpoints/best.ckpt`, the EMA weights at the validation point
    with the highest `val/miou_best` (early stopping on PhraseCut val; the tables score the test split). Added
    only to the stage configs that evaluate, and only when not the default, so other runs keep their keys."""
    choice = str(cfg.get("chapter3_weights") or "final")
    if choice not in CHAPTER3_WEIGHTS:
        raise ValueError(f"chapter3_weights must be one of {CHAPTER3_WEIGHTS}, got {choice!r}")
    return {} if choice == "final" else {"chapter3_weights": choice}


def build_stages(cfg: DictConfig) -> list[Stage]:
    seeds = seeds_of(cfg)
    world_seed = int(cfg.world_seed)

    def world(name: str) -> DictConfig:
        node = OmegaConf.merge(cfg.worlds[name], {"seed": world_seed})
        return node

    tiny_path, tiny_overrides = chapter_config(cfg, "tiny_ldm")
    tiny = load_config(tiny_path, tiny_overrides)
    tiny.seed = int(cfg.seed)

    def chapter(key: str) -> dict:
        path, overrides = chapter_config(cfg, key)
        return {"config": str(path), "overrides": overrides, "seeds": seeds, "composed": composed(path, overrides)}

    per_seed = [f"seed{seed}" for seed in seeds]
    variants = ldznet_variants(chapter("ldznet"))
    # continue_from (experiments/demo/study_chapter3_long.yaml): the Chapter-3 training parts resume from the
    # same parts of that finished run folder; only then is it part of their stage keys (other runs keep theirs)
    continued = continue_from(cfg)
    training = chapter("ldznet") | continued
    image_only = chapter("ldznet") | continued | {"image_only_variant": str(cfg.floors.image_only_variant)}
    weights = chapter3_weights(cfg)  # which checkpoint of each Chapter-3 run the evaluating stages score

    return [  # plan order = priority with jobs > 1: the long chain (tiny LDM -> Chapter 3) and long units first
        Stage("world_shapes", run_world_shapes, world("shapes"),
              code=("demo.worlds.shapes", "demo.worlds.noise", "ldznet.data"),
              description="segmentation world: PhraseCut, AIGI, RefCOCO / RefCOCO+ / G-Ref"),
        Stage("tiny_ldm", run_tiny_ldm, tiny, requires=("ldznet.stable_diffusion", "ldznet.tiny_configs"),
              code=("demo.tiny_ldm", "demo.worlds.shapes", "ldznet.stable_diffusion", "ldznet.tiny_configs"),
              description="tiny LDM: AutoencoderKL + contrastive CLIP text encoder + DDPM UNet (diffusers layout)"),
        Stage("world_faces", run_world_faces, world("faces"),
              code=("demo.worlds.faces", "demo.worlds.noise", "sharingan.data"),
              description="face world: SfSNet synthetic, CelebA, Photoface, Multi-PIE"),
        Stage("world_street", run_world_street, world("street"), options={"workers": int(cfg.threads)},
              code=("demo.worlds.street", "demo.worlds.raycast", "demo.worlds.noise", "sharingan.data"),
              description="depth world: vKITTI (synthetic), KITTI raw (real, stereo + Velodyne), Make3D"),
        Stage("faces", partial(combine_seeds, task="normals"), chapter("faces"), needs=("world_faces",),
              parts=per_seed, run_part=partial(run_chapter2_seed, "normals", "world_faces", faces_data_overrides),
              requires=("sharingan.pipeline", "sharingan.tasks.normals"), code=("sharingan", "common"),
              description="Chapter 2 faces: SfSNet and SharinGAN, Photoface normals + Multi-PIE lighting"),
        Stage("depth", partial(combine_seeds, task="depth"), chapter("depth"), needs=("world_street",),
              parts=per_seed, run_part=partial(run_chapter2_seed, "depth", "world_street", depth_data_overrides),
              requires=("sharingan.pipeline", "sharingan.tasks.depth"), code=("sharingan", "common"),
              description="Chapter 2 depth: pretrain G and T, SharinGAN and ablations, KITTI + Make3D"),
        # the image-only floor's parts (~600 s each on one CPU thread) before the Chapter-3 training parts (160-
        # 1160 s), those costliest model first: long units first leave less of a one-worker tail (the scheduler
        # replayed on both 90-minute studies' unit times; docs/demo-study-notes.md, "The runs")
        Stage("floor_image_only", combine_seeds, image_only, needs=("world_shapes", "tiny_ldm"),
              parts=per_seed, run_part=floors.fit_image_only, requires=("ldznet.pipeline",),
              code=("demo.floors", "demo.data_overrides", "ldznet", "common"),
              description="segmentation floor: the image-only model (one fixed phrase), trained per seed"),
        Stage("ldznet_train", combine_parts, training, needs=("world_shapes", "tiny_ldm"),
              parts=ldznet_training_parts(seeds, variants),
              run_part=run_ldznet_training, requires=("ldznet.pipeline",), code=("ldznet", "common"),
              description="Chapter 3 training: RGBNet, ZNet, LD-ZNet, concat, one part per (seed, model)"),
        Stage("probe", run_probe, chapter("probe"), needs=("world_shapes", "tiny_ldm"),
              requires=("ldznet.analysis.probe",), code=("ldznet", "common"),
              description="Fig 3.4: AP of a small decoder per (spatial-attention block, timestep)"),
        Stage("ldznet", combine_seeds, chapter("ldznet") | weights, needs=("world_shapes", "tiny_ldm", "ldznet_train"),
              parts=per_seed, run_part=run_ldznet_seed, requires=("ldznet.pipeline",), code=("ldznet", "common"),
              description="Chapter 3 evaluation: the trained models on PhraseCut, AIGI, RefCOCO (ldznet.pipeline)"),
        Stage("floors_depth", floors.run_floors_depth, chapter("depth"), needs=("world_street", "depth"),
              requires=("sharingan.tasks.depth",),
              code=("demo.floors", "demo.per_image", "demo.data_overrides", "sharingan", "common"),
              description="depth floor (per-pixel mean training depth) + per-image errors of every row"),
        Stage("floors_faces", floors.run_floors_faces, chapter("faces"), needs=("world_faces", "faces"),
              requires=("sharingan.tasks.normals",),
              code=("demo.floors", "demo.per_image", "demo.data_overrides", "sharingan", "common"),
              description="face floor (frontal normal, mean training lighting) + per-image errors of every row"),
        Stage("floors_segmentation", floors.run_floors_segmentation,
              image_only | weights, needs=("world_shapes", "tiny_ldm", "ldznet", "floor_image_only"),
              requires=("ldznet.pipeline",),
              code=("demo.floors", "demo.per_image", "demo.data_overrides", "ldznet", "common"),
              description="segmentation floors (all foreground, image-only model) + per-sample IoU of every row"),
    ]
