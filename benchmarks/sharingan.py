"""What SharinGAN training costs (dissertation §2.2, eq. 2.10; §2.3.1.2 depth, §2.3.2.2 faces).

One training iteration of the project's `sharingan.lit_module.SharinGANModule` run by a real Lightning
Trainer (so the manual-optimisation path, optimisers and loss code are the ones training uses); the time is
taken from the start to the end of each training batch, data loading excluded:
- depth: 5 critic steps, 1 G step, 1 T step at 192x640 with 2 synthetic + 2 real images;
- faces: 5 critic steps, 3 G steps, 1 T step at 128x128 with 16 + 16 images (a fresh batch per G / T step).
Beside it, the same iteration with `use_sharingan: false` (T alone on raw images: the ablation's cost) and
the forward and forward+backward time of G, T and the critic separately on one domain's batch.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from benchmarks.timing import Context, progress, release_memory, summarize, synchronize, time_calls
from common.config import load_config
from sharingan.lit_module import SharinGANModule
from sharingan.losses import critic_loss
from sharingan.schedule import batch_chunks
from sharingan.tasks import load_task

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {"depth": REPO / "experiments/chapter2/depth_sharingan.yaml",
           "faces": REPO / "experiments/chapter2/faces_sharingan.yaml"}
QUICK_CONFIGS = {"depth": REPO / "experiments/chapter2/depth_tiny.yaml",
                 "faces": REPO / "experiments/chapter2/faces_tiny.yaml"}


def plan(context: Context) -> dict:
    if context.quick:
        return {"depth": {"size": [32, 64], "batch": 2}, "faces": {"size": [64, 64], "batch": 2},
                "warmup": 0, "repeats": 1, "network_repeats": 1,
                "reductions": ["quick: the tiny configs (depth_tiny / faces_tiny widths) at 32x64 and 64x64, "
                               "2 + 2 images"]}
    if context.full:
        return {"depth": {"size": [192, 640], "batch": 2}, "faces": {"size": [128, 128], "batch": 16},
                "warmup": 2, "repeats": 5, "network_repeats": 10, "reductions": []}
    return {"depth": {"size": [96, 320], "batch": 2}, "faces": {"size": [64, 64], "batch": 2},
            "warmup": 0, "repeats": 1, "network_repeats": 1,
            "reductions": ["cpu: depth at 96x320 (a quarter of the pixels of 192x640), paper-size networks, 2 + 2 "
                           "images; one 192x640 iteration is several TFLOP, minutes on a small shared CPU",
                           "cpu: faces at 64x64 with 2 + 2 images per step (paper: 128x128, 16 + 16), paper-size "
                           "networks (one iteration still processes 5 x 2 images per domain)",
                           "cpu: one timed iteration, no warm-up (the first iteration also allocates the Adam "
                           "state); one timed call per network after none"]}


def load_task_config(task: str, context: Context, size: list[int], batch: int, use_sharingan: bool = True):
    path = (QUICK_CONFIGS if context.quick else CONFIGS)[task]
    overrides = [f"data.size=[{size[0]},{size[1]}]", f"sharingan.use_sharingan={str(use_sharingan).lower()}",
                 "logging.image_every=0"]
    overrides.append(f"data.batch_size.train={batch}" if task == "depth" else f"data.batch_size={batch}")
    return load_config(path, overrides)


# ------------------------------------------------------------------------------------------------- batches
def depth_batch(batch: int, size: list[int], generator: torch.Generator) -> dict:
    """One training batch in the depth loaders' format (vKITTI synthetic + KITTI stereo real)."""
    height, width = size

    def image():
        return torch.rand(batch, 3, height, width, generator=generator) * 2 - 1

    focal_baseline = torch.full((batch,), 721.5377 * 0.54 * width / 1242.0)
    return {"synthetic": {"image": image(), "depth": torch.rand(batch, 1, height, width, generator=generator) * 2 - 1},
            "real": {"image": image(), "right": image(), "focal_baseline": focal_baseline}}


def face_batch(batch: int, size: list[int], generator: torch.Generator) -> dict:
    """One training batch in the face loaders' format (SfSNet synthetic + pseudo-labelled CelebA)."""
    side = size[0]

    def domain():
        return {"image": torch.rand(batch, 3, side, side, generator=generator),
                "normal": torch.rand(batch, 3, side, side, generator=generator),
                "albedo": torch.rand(batch, 3, side, side, generator=generator),
                "lighting": torch.randn(batch, 27, generator=generator),
                "mask": (torch.rand(batch, 1, side, side, generator=generator) > 0.2).float()}

    return {"synthetic": domain(), "real": domain()}


class Batches(Dataset):
    """Ready-made batches (the loader passes them through unchanged: batch_size=None)."""

    def __init__(self, batches: list[dict]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> dict:
        return self.batches[index]


# ----------------------------------------------------------------------------------------------- iteration
def iteration_times(cfg, task: str, batch: int, size: list[int], context: Context, warmup: int, repeats: int
                    ) -> dict:
    """Median ms of one training iteration of SharinGANModule under a Lightning Trainer."""
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)

    class IterationTimer(pl.Callback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.start = 0.0

        def on_train_batch_start(self, trainer, module, batch, batch_index) -> None:
            synchronize(context.device)
            self.start = _now()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_index) -> None:
            synchronize(context.device)
            self.times.append((_now() - self.start) * 1000.0)

    chunks = batch_chunks(cfg)
    make = depth_batch if task == "depth" else face_batch
    generator = torch.Generator().manual_seed(0)
    batches = [make(batch * chunks, size, generator) for _ in range(warmup + repeats)]
    module = SharinGANModule(cfg)
    timer = IterationTimer()
    trainer = pl.Trainer(accelerator="gpu" if context.device.type == "cuda" else "cpu", devices=1, max_epochs=1,
                         limit_train_batches=len(batches), limit_val_batches=0, num_sanity_val_steps=0,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, precision="32-true", callbacks=[timer])
    trainer.fit(module, train_dataloaders=DataLoader(Batches(batches), batch_size=None, num_workers=0))
    measured = timer.times[warmup:]
    summary = summarize(measured)
    del trainer, module
    release_memory(context.device)
    return summary


def _now() -> float:
    return time.perf_counter()


# ------------------------------------------------------------------------------------------------ networks
def _scalar(output) -> Tensor:
    if isinstance(output, Tensor):
        return output.float().mean()
    values = output.values() if isinstance(output, dict) else output
    return sum(value.float().mean() for value in values)


def network_calls(networks: dict[str, nn.Module], images: Tensor, other: Tensor, gradient_penalty: float
                  ) -> dict[str, object]:
    """forward (no grad) and forward+backward of G, T, D; the critic's WGAN-GP loss forward+backward."""
    calls = {}
    for name, network in networks.items():
        network.train()

        def forward(network=network):
            with torch.no_grad():
                return network(images)

        def forward_backward(network=network):
            network.zero_grad(set_to_none=True)
            _scalar(network(images)).backward()

        calls[(name, "forward_ms")] = forward
        calls[(name, "forward_backward_ms")] = forward_backward
    critic = networks["critic"]

    def critic_step():
        critic.zero_grad(set_to_none=True)
        loss, _ = critic_loss(critic, images, other, gradient_penalty)
        loss.backward()

    calls[("critic", "wgan_gp_loss_forward_backward_ms")] = critic_step
    return calls


def measure_task(task: str, settings: dict, context: Context) -> tuple[list, list, list]:
    size, batch = settings[task]["size"], settings[task]["batch"]
    steps_rows, network_rows, ratio_rows = [], [], []
    cfg = load_task_config(task, context, size, batch)
    steps = cfg.sharingan.steps
    plain_cfg = load_task_config(task, context, size, batch, use_sharingan=False)
    timings = {}
    for label, config in (("SharinGAN", cfg), ("T alone (no SharinGAN)", plain_cfg)):
        timings[label] = iteration_times(config, task, batch, size, context, settings["warmup"],
                                         settings["repeats"])
        progress(f"{task} {label}: {timings[label]['median_ms']:.0f} ms per iteration")
        schedule = (f"{steps.critic} critic + {steps.generator} G + {steps.task} T" if label == "SharinGAN"
                    else f"{steps.task} T")
        steps_rows.append({"task": task, "variant": label, "size": f"{size[0]}x{size[1]}",
                           "images": f"{batch} + {batch}", "steps": schedule,
                           "ms_per_iteration": timings[label]["median_ms"], "min_ms": timings[label]["min_ms"],
                           "max_ms": timings[label]["max_ms"], "repeats": timings[label]["repeats"]})
    ratio_rows.append({"ratio": f"{task}: SharinGAN iteration / T-alone iteration", "setting": f"{size[0]}x{size[1]}",
                       "ours": timings["SharinGAN"]["median_ms"] / timings["T alone (no SharinGAN)"]["median_ms"]})

    built = load_task(str(cfg.task)).build_networks(cfg)
    networks = {name: built[name].to(context.device) for name in ("generator", "task_network", "critic")}
    make = depth_batch if task == "depth" else face_batch
    generator = torch.Generator().manual_seed(1)
    first, second = make(batch, size, generator)["synthetic"]["image"], make(batch, size, generator)["real"]["image"]
    calls = network_calls(networks, first.to(context.device), second.to(context.device),
                          float(cfg.sharingan.weights.gradient_penalty))
    results = time_calls(calls, context.device, settings["warmup"], settings["network_repeats"])
    names = {"generator": "G", "task_network": "T", "critic": "D (critic)"}
    for name, network in networks.items():
        row = {"task": task, "network": f"{names[name]} {type(network).__name__}",
               "params_m": round(sum(p.numel() for p in network.parameters()) / 1e6, 3),
               "batch": batch, "size": f"{size[0]}x{size[1]}"}
        for (network_name, column), summary in results.items():
            if network_name == name:
                row[column] = summary["median_ms"]
        network_rows.append(row)
        ratio_rows.append({"ratio": f"{task}: {names[name]} forward+backward / forward", "setting": f"batch {batch}",
                           "ours": row["forward_backward_ms"] / row["forward_ms"]})
    del networks
    release_memory(context.device)
    return steps_rows, network_rows, ratio_rows


def run(context: Context) -> dict:
    settings = plan(context)
    iterations, networks, ratios = [], [], []
    for task in ("depth", "faces"):
        steps_rows, network_rows, ratio_rows = measure_task(task, settings, context)
        iterations += steps_rows
        networks += network_rows
        ratios += ratio_rows
    return {
        "name": "sharingan",
        "title": "SharinGAN training cost (dissertation §2.2, eq. 2.10)",
        "settings": {k: v for k, v in settings.items() if k != "reductions"},
        "reductions": settings["reductions"],
        "tables": [
            {"title": "One training iteration (Lightning Trainer, fp32, data loading excluded)",
             "columns": ["task", "variant", "size", "images", "steps", "ms_per_iteration", "min_ms", "max_ms",
                         "repeats"], "rows": iterations},
            {"title": "Networks separately (train mode, one domain's batch; D also with its WGAN-GP loss)",
             "columns": ["task", "network", "params_m", "size", "batch", "forward_ms", "forward_backward_ms",
                         "wgan_gp_loss_forward_backward_ms"], "rows": networks},
            {"title": "Ratios", "columns": ["ratio", "setting", "ours"], "rows": ratios},
        ],
        "notes": ["Random weights and random inputs in the loaders' batch format; the optimiser steps are "
                  "included in the iteration time (Adam, the configs' learning rates)."],
    }
