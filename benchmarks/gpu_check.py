"""`python -m benchmarks.gpu_check` (`make gpu-check`): what a CUDA GPU does with this project, in one results file.

Pieces, in this order (each within what is left of `--budget-s`, default 480 s; a piece that does not fit is
recorded as "not run: time budget", never left out silently):
    training     20 training iterations of each chapter at the paper's sizes, plain and with the throughput
                 switches (common.performance): SharinGAN depth 192x640 with 2 + 2 images, faces 128x128 with
                 16 + 16 (5 critic, 3 G, 1 T steps), LD-ZNet 384x384 batch 4 with an SD-v1-sized random UNet
                 (ldznet.stable_diffusion.build_random_components, no download); ms per iteration, exact peak
                 memory (torch.cuda.max_memory_allocated), and LD-ZNet's 24 GB goal (bf16 + checkpointing)
    resume       exact resume on the device: SharinGAN depth (tiny networks, generated KITTI/vKITTI files) trained
                 4 iterations straight vs 2 + resume to 4; the largest weight difference of G, D, T
    ddp          one 2-GPU DDP run (torchrun --nproc-per-node 2 -m sharingan.train, tiny depth) when two GPUs are
                 visible; otherwise skipped with a note
    demo         `python -m demo --quick device=cuda`: the miniature's chapters training and evaluating on the GPU,
                 every stage's status (at most 300 s)
    benchmarks   the benchmark set (`python -m benchmarks` at full sizes: bf16, torch.compile, CUDA peak memory)

Without CUDA it refuses (exit status 2) with a message. `--device cpu --tiny` runs every piece at tiny sizes on
the CPU: for the tests only (tests/benchmarks/test_gpu_check.py). Writes
`benchmarks/results/gpu-check-<device>-<UTC date>.{json,md}` with the command, git commit, device and versions.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from benchmarks import BENCHMARKS, load_benchmark
from benchmarks.report import device_slug, environment, markdown_table
from benchmarks.timing import Context, peak_memory, release_memory, summarize, synchronize
from common.checkpoints import load_torch, write_json, write_text
from common.performance import apply_performance, attention_processors

REPO = Path(__file__).resolve().parents[1]
ITERATIONS = 20
LDZNET_GOAL_GIB = 24.0
# the throughput switches measured against the plain run (bf16 is refused for SharinGAN end to end)
SHARINGAN_VARIANTS = {"fp32": {}, "fp32 + channels_last + fused Adam + compile":
                      {"channels_last": True, "fused_optimizer": "auto", "compile": True}}
LDZNET_VARIANTS = {
    "fp32": {"precision": "32-true", "checkpointing": False, "performance": {}},
    "bf16-mixed + checkpointing + fused AdamW + SDPA": {"precision": "bf16-mixed", "checkpointing": True,
                                                        "performance": {"fused_optimizer": "auto"}},
    "bf16-mixed + checkpointing + fused AdamW + SDPA + compile": {
        "precision": "bf16-mixed", "checkpointing": True, "performance": {"fused_optimizer": "auto", "compile": True}},
}


def plan(tiny: bool) -> dict[str, Any]:
    """Sizes of every piece: the paper's (GPU) or tiny ones (CPU tests)."""
    if tiny:
        return {"iterations": 3, "depth": {"size": [32, 64], "batch": 2}, "faces": {"size": [64, 64], "batch": 2},
                "ldznet": {"architecture": "tiny", "size": 64, "batch": 2}, "compile_backend": "aot_eager",
                "benchmark_mode": "quick"}
    return {"iterations": ITERATIONS, "depth": {"size": [192, 640], "batch": 2},
            "faces": {"size": [128, 128], "batch": 16}, "ldznet": {"architecture": "sd", "size": 384, "batch": 4},
            "compile_backend": "inductor", "benchmark_mode": "cuda"}


def refusal(device: str, tiny: bool) -> str | None:
    """Why this check cannot run here (None: it can)."""
    if device == "cpu":
        return None if tiny else ("gpu-check refuses --device cpu without --tiny: the CPU runs only the tiny test "
                                  "sizes (for the tests); the check itself needs a CUDA GPU")
    if not torch.cuda.is_available():
        return ("gpu-check needs a CUDA GPU, and torch.cuda.is_available() is False on this machine "
                f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); nothing was measured")
    return None


# ------------------------------------------------------------------------------------------------- training
def _quiet_lightning() -> None:
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="pytorch_lightning")


def _timed_fit(module, loader, device: torch.device, iterations: int, precision: str) -> dict[str, Any]:
    """Fit `iterations` loader batches under a Lightning Trainer; ms per iteration (median after the first, which
    compiles and allocates) and the peak memory of the whole fit."""
    import pytorch_lightning as pl  # deferred: ~3.8 s to import (measured); only the training piece fits

    class Timer(pl.Callback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.start = 0.0

        def on_train_batch_start(self, *args) -> None:
            synchronize(device)
            self.start = time.perf_counter()

        def on_train_batch_end(self, *args) -> None:
            synchronize(device)
            self.times.append((time.perf_counter() - self.start) * 1000.0)

    timer = Timer()
    trainer = pl.Trainer(accelerator="gpu" if device.type == "cuda" else "cpu", devices=1, max_epochs=1,
                         limit_train_batches=iterations, limit_val_batches=0, num_sanity_val_steps=0, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         precision=precision, callbacks=[timer])
    with peak_memory(device) as readings:
        trainer.fit(module, train_dataloaders=loader)
    measured = timer.times[1:] or timer.times
    return {"iterations": len(timer.times), "first_iteration_ms": timer.times[0],
            **{f"{key}": value for key, value in summarize(measured).items()}, **readings[0].as_dict()}


def sharingan_training(task: str, settings: dict, device: torch.device, tiny: bool) -> list[dict]:
    # deferred: Lightning and the SharinGAN engine, ~4.3 s to import (measured), only for this piece
    from benchmarks.sharingan import Batches, depth_batch, face_batch, load_task_config
    from sharingan.lit_module import SharinGANModule
    from sharingan.schedule import batch_chunks

    size, batch = settings[task]["size"], settings[task]["batch"]
    cfg = load_task_config(task, Context(device, "quick" if tiny else "cuda"), size, batch)
    make = depth_batch if task == "depth" else face_batch
    generator = torch.Generator().manual_seed(0)
    batches = [make(batch * batch_chunks(cfg), size, generator) for _ in range(settings["iterations"])]
    rows = []
    for label, options in SHARINGAN_VARIANTS.items():
        torch.manual_seed(0)
        module = SharinGANModule(cfg)
        options = {**options, "compile_backend": settings["compile_backend"]} if options.get("compile") else options
        record = apply_performance(module, options, {"generator": module.generator,
                                                     "task_network": module.task_network})
        loader = DataLoader(Batches(batches), batch_size=None, num_workers=0)
        result = _timed_fit(module, loader, device, settings["iterations"], "32-true")
        finite = all(torch.isfinite(p).all() for p in module.parameters())
        rows.append({"chapter": "2", "task": task, "variant": label, "size": f"{size[0]}x{size[1]}",
                     "images": f"{batch} + {batch}", "finite_weights": bool(finite),
                     "compile": record.get("compile"), **result})
        del module, loader
        release_memory(device)
    return rows


def ldznet_training(settings: dict, device: torch.device) -> list[dict]:
    # deferred: Lightning, diffusers and the LD-ZNet module, ~5.6 s to import (measured), only for this piece
    from benchmarks.memory import make_batch
    from benchmarks.segmentation import tokenizer_for_benchmarks
    from ldznet.config import model_defaults, optim_defaults
    from ldznet.lit_module import SegmenterLitModule
    from ldznet.stable_diffusion import build_random_components

    node = settings["ldznet"]
    tokenizer = tokenizer_for_benchmarks()
    batches = [make_batch(node["batch"], node["size"], torch.device("cpu")) for _ in range(settings["iterations"])]
    rows = []
    for label, variant in LDZNET_VARIANTS.items():
        torch.manual_seed(0)
        components = build_random_components(node["architecture"], tokenizer)
        module = SegmenterLitModule(model_defaults(variant="ldznet", image_size=node["size"],
                                                  gradient_checkpointing=variant["checkpointing"]),
                                    optim_defaults(ema=True, batch_size=node["batch"]), log_images_every=0,
                                    components=components)
        options = dict(variant["performance"])
        if options.get("compile"):
            options["compile_backend"] = settings["compile_backend"]
        record = apply_performance(module, options, {"unet": module.model.unet, "head": module.model.head})
        loader = DataLoader(batches, batch_size=None, num_workers=0)
        result = _timed_fit(module, loader, device, settings["iterations"], variant["precision"])
        finite = all(torch.isfinite(p).all() for p in module.model.parameters() if p.requires_grad)
        peak_gib = result["peak_mib"] / 1024
        rows.append({"chapter": "3", "task": "ldznet", "variant": label, "size": f"{node['size']}x{node['size']}",
                     "images": str(node["batch"]), "finite_weights": bool(finite), "compile": record.get("compile"),
                     "attention": attention_processors(module.model),
                     "within_24_gib": peak_gib <= LDZNET_GOAL_GIB if device.type == "cuda" else None, **result})
        del module, components, loader
        release_memory(device)
    return rows


def training_piece(settings: dict, device: torch.device, tiny: bool) -> dict:
    rows = sharingan_training("depth", settings, device, tiny) + sharingan_training("faces", settings, device, tiny)
    rows += ldznet_training(settings, device)
    status = "ok" if all(row["finite_weights"] for row in rows) else "failed: non-finite weights after training"
    return {"name": "training", "status": status, "tables": [{
        "title": f"{settings['iterations']} training iterations per variant (median ms after the first)",
        "columns": ["chapter", "task", "variant", "size", "images", "iterations", "first_iteration_ms", "median_ms",
                    "min_ms", "max_ms", "memory_kind", "peak_mib", "within_24_gib", "finite_weights"],
        "rows": rows}],
        "notes": [f"LD-ZNet goal: training at batch 4, 384x384 in at most {LDZNET_GOAL_GIB:.0f} GiB (peak "
                  "max_memory_allocated of the whole fit, weights, AdamW and EMA included)",
                  "SharinGAN runs fp32 only: sharingan.train refuses bf16-mixed for the end-to-end stage"]}


# --------------------------------------------------------------------------------------------------- resume
def _depth_fixtures(folder: Path) -> list[str]:
    from common.testing import write_depth_fixtures  # deferred: ~4.5 s to import (measured), resume piece only

    return write_depth_fixtures(folder)


def resume_piece(settings: dict, device: torch.device, tiny: bool) -> dict:
    """4 iterations straight vs 2 + resume (resume=PATH) to 4, SharinGAN depth tiny, on the device."""
    from common.config import load_config  # deferred: omegaconf, ~0.05 s of the ~1.5 s start-up (measured)
    from sharingan.train import run_stage  # deferred: ~4.4 s to import (measured), resume piece only

    tiny_config = REPO / "experiments" / "chapter2" / "depth_tiny.yaml"
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        data = _depth_fixtures(folder / "data")
        common = [*data, f"trainer.accelerator={accelerator}", "trainer.devices=1", "schedule.checkpoint_every=1",
                  "logging.image_every=0", "experiment=gpu_check_resume"]
        straight = run_stage(load_config(tiny_config, [*common, "schedule.train_iterations=4"]), "train",
                             folder / "straight")
        first = run_stage(load_config(tiny_config, [*common, "schedule.train_iterations=2"]), "train", folder / "split")
        checkpoint = first["run_dir"] / "checkpoints" / "last.ckpt"
        resumed = run_stage(load_config(tiny_config, [*common, "schedule.train_iterations=4"]), "train",
                            folder / "split", resume=checkpoint)
        expected = load_torch(straight["run_dir"] / "checkpoints" / "networks_last.pt")["networks"]
        got = load_torch(resumed["run_dir"] / "checkpoints" / "networks_last.pt")["networks"]
        rows = []
        for network, state in expected.items():
            difference = max(float((got[network][key].double() - value.double()).abs().max())
                             for key, value in state.items() if value.is_floating_point())
            rows.append({"network": network, "max_abs_difference": difference, "exact": difference == 0.0})
    status = "ok" if all(row["exact"] for row in rows) else "differs: see max_abs_difference"
    return {"name": "resume", "status": status, "tables": [{
        "title": "Exact resume: SharinGAN depth (tiny networks), 4 iterations straight vs 2 + resume to 4",
        "columns": ["network", "max_abs_difference", "exact"], "rows": rows}],
        "notes": ["deterministic: true (torch.use_deterministic_algorithms, CUBLAS_WORKSPACE_CONFIG) as the configs "
                  "set it; exact = bitwise equal weights"]}


# ------------------------------------------------------------------------------------------------------ DDP
def ddp_piece(settings: dict, device: torch.device, tiny: bool) -> dict:
    visible = torch.cuda.device_count() if device.type == "cuda" else 0
    if visible < 2:
        where = f"{visible} CUDA GPU(s) visible" if device.type == "cuda" else "CPU tiny mode"
        return {"name": "ddp", "status": f"skipped: {where}; the 2-GPU DDP step needs two GPUs (2-process DDP is "
                "tested on the CPU by tests/reliability/test_ddp_sharingan.py and test_torchrun_launch.py)",
                "tables": [], "notes": []}
    tiny_config = REPO / "experiments" / "chapter2" / "depth_tiny.yaml"
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        data = _depth_fixtures(folder / "data")
        env = {key: value for key, value in os.environ.items()
               if key not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "SLURM_PROCID", "SLURM_NTASKS")}
        env["PYTHONPATH"] = str(REPO)
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
                   "sharingan.train", str(tiny_config), "--root", str(folder / "runs"), *data,
                   "trainer.accelerator=gpu", "trainer.devices=2", "schedule.train_iterations=2",
                   "logging.image_every=0", "experiment=gpu_check_ddp"]
        started = time.perf_counter()
        process = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        seconds = time.perf_counter() - started
        runs = sorted((folder / "runs" / "chapter2" / "gpu_check_ddp" / "train").glob("*/checkpoints/"
                                                                                         "networks_last.pt"))
    ok = process.returncode == 0 and len(runs) == 1
    return {"name": "ddp", "status": "ok" if ok else f"failed: exit {process.returncode}, {len(runs)} run folders",
            "tables": [{"title": "2-GPU DDP (torchrun, SharinGAN depth tiny, 2 iterations)",
                        "columns": ["exit_status", "run_folders_with_networks", "seconds"],
                        "rows": [{"exit_status": process.returncode, "run_folders_with_networks": len(runs),
                                  "seconds": seconds}]}],
            "notes": [] if ok else [process.stderr[-2000:]]}


# ----------------------------------------------------------------------------------------------------- demo
DEMO_TIMEOUT_S = 300


def demo_piece(settings: dict, device: torch.device, tiny: bool) -> dict:
    """`python -m demo --quick device=cuda` end to end (the miniature's chapters training and evaluating on the
    GPU: demo.plan.CUDA_OVERRIDES), with its stage statuses; in tiny mode (CPU tests) one world stage only."""
    jobs = 1 if tiny else max(1, min(4, os.cpu_count() or 1))
    with tempfile.TemporaryDirectory() as folder:
        command = [sys.executable, "-m", "demo", "--quick", f"out={Path(folder) / 'demo-quick'}",
                   f"device={device.type}", f"jobs={jobs}"] + (["--only", "world_shapes"] if tiny else [])
        started = time.perf_counter()
        try:
            process = subprocess.run(command, cwd=REPO, env=os.environ | {"PYTHONPATH": str(REPO)},
                                     capture_output=True, text=True, timeout=DEMO_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return {"name": "demo", "status": f"failed: not finished within {DEMO_TIMEOUT_S} s", "tables": [],
                    "notes": [" ".join(command[1:])]}
        seconds = time.perf_counter() - started
    statuses = demo_statuses(process.stdout)
    ran = [name for name, status in statuses.items() if status == "done"]
    ok = process.returncode == 0 and bool(statuses) and ran == (["world_shapes"] if tiny else list(statuses))
    return {"name": "demo", "status": "ok" if ok else f"failed: exit {process.returncode}",
            "tables": [{"title": f"python -m demo --quick device={device.type} ({seconds:.0f} s, jobs {jobs})",
                        "columns": ["stage", "status"],
                        "rows": [{"stage": name, "status": status} for name, status in statuses.items()]}],
            "notes": [] if ok else [process.stderr[-2000:]]}


def demo_statuses(stdout: str) -> dict[str, str]:
    """{stage: status} from the last lines `python -m demo` prints (after `report: ...`)."""
    lines = stdout.splitlines()
    starts = [k for k, line in enumerate(lines) if line.startswith("report: ")]
    statuses = {}
    for line in lines[starts[-1] + 1:] if starts else []:
        parts = line.split(None, 1)
        if line.startswith("  ") and len(parts) == 2:
            statuses[parts[0]] = parts[1].split(":", 1)[0]
    return statuses


# ----------------------------------------------------------------------------------------------- benchmarks
def benchmarks_piece(settings: dict, device: torch.device, tiny: bool) -> dict:
    context = Context(device, settings["benchmark_mode"])
    sections = []
    for name in BENCHMARKS:
        begin = time.perf_counter()
        try:
            section = load_benchmark(name)(context)
            section.setdefault("status", "ok")
        except Exception as error:  # noqa: BLE001 - recorded; the other benchmarks still run
            traceback.print_exc()
            section = {"name": name, "title": name, "status": f"failed: {type(error).__name__}: {error}",
                       "tables": []}
        section["wall_time_s"] = round(time.perf_counter() - begin, 1)
        sections.append(section)
    failed = [section["name"] for section in sections if section["status"] != "ok"]
    tables = [{**table, "title": f"{section['title']}: {table['title']}"} for section in sections
              for table in section.get("tables", [])]
    return {"name": "benchmarks", "status": "ok" if not failed else f"failed: {', '.join(failed)}",
            "tables": tables, "sections": sections, "notes": [f"benchmark mode {context.mode}"]}


PIECES: dict[str, Callable[[dict, torch.device, bool], dict]] = {
    "training": training_piece, "resume": resume_piece, "ddp": ddp_piece, "demo": demo_piece,
    "benchmarks": benchmarks_piece}


# ------------------------------------------------------------------------------------------------- results
def render(results: dict) -> str:
    env = results["environment"]
    lines = ["# GPU check", "", f"- device: **{env['benchmark_device']}**, {results['cuda_devices']} CUDA device(s)",
             f"- command: `{results['command']}`", f"- git: {env.get('git', {}).get('sha')} "
             f"(dirty: {env.get('git', {}).get('dirty')})", f"- date: {env['date']}, wall time "
             f"{results['wall_time_s']:.0f} s of a {results['budget_s']:.0f} s budget",
             f"- torch {torch.__version__}, CUDA {torch.version.cuda}", ""]
    for piece in results["pieces"]:
        lines += [f"## {piece['name']}: {piece['status']} ({piece.get('wall_time_s', 0):.0f} s)", ""]
        for table in piece.get("tables", []):
            lines += [f"### {table['title']}", "", markdown_table(table["columns"], table["rows"])]
        lines += [f"- note: {note}" for note in piece.get("notes", [])] + [""]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cpu only with --tiny (tests)")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes: the CPU test of every piece")
    parser.add_argument("--only", action="append", choices=list(PIECES), help="run only these pieces")
    parser.add_argument("--budget-s", type=float, default=480.0, help="pieces start only within this many seconds")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    reason = refusal(args.device, args.tiny)
    if reason:
        print(f"error: {reason}", file=sys.stderr)
        return 2
    _quiet_lightning()
    device = torch.device(args.device)
    settings = plan(args.tiny)
    started = time.perf_counter()
    pieces = []
    for name in args.only or list(PIECES):
        elapsed = time.perf_counter() - started
        if elapsed >= args.budget_s:
            pieces.append({"name": name, "status": f"not run: time budget ({elapsed:.0f} s of {args.budget_s:.0f} s "
                           "used before it)", "tables": [], "notes": []})
            continue
        print(f"[gpu-check] {name} ...", flush=True)
        begin = time.perf_counter()
        try:
            piece = PIECES[name](settings, device, args.tiny)
        except Exception as error:  # noqa: BLE001 - recorded; the other pieces still run
            traceback.print_exc()
            piece = {"name": name, "status": f"failed: {type(error).__name__}: {error}", "tables": [], "notes": []}
        piece["wall_time_s"] = round(time.perf_counter() - begin, 1)
        print(f"[gpu-check] {name}: {piece['status']} in {piece['wall_time_s']:.0f} s", flush=True)
        pieces.append(piece)
        release_memory(device)
    context = Context(device, "quick" if args.tiny else "cuda")
    command = "python -m benchmarks.gpu_check " + " ".join(sys.argv[1:] if argv is None else argv)
    results = {"environment": environment(context), "command": command.strip(), "plan": settings,
               "cuda_devices": torch.cuda.device_count() if device.type == "cuda" else 0,
               "budget_s": args.budget_s, "wall_time_s": time.perf_counter() - started, "pieces": pieces}
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H%M%SZ")
    stem = Path(args.out) / f"gpu-check-{'tiny-' if args.tiny else ''}{device_slug(context)}-{date}"
    write_json(stem.with_suffix(".json"), results)
    write_text(stem.with_suffix(".md"), render(results))
    print(f"wrote {stem.with_suffix('.json')} and {stem.with_suffix('.md')}")
    bad = [piece["name"] for piece in pieces if not piece["status"].startswith(("ok", "skipped"))]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
