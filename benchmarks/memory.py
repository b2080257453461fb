"""Peak memory of one LD-ZNet training step (dissertation §3.3 training; docs/ref-ldznet.md §1.4, §8).

One step = what `ldznet.lit_module.SegmenterLitModule` does per batch: frozen CLIP text + VAE + frozen LDM
features, ZNet forward with the injected LDM cross-attention, BCE-with-logits loss, backward, AdamW step and
the EMA update of the trainable weights. Measured at batch 1, 2 and 4, with and without gradient
checkpointing (diffusers' `enable_gradient_checkpointing` on the trainable UNet, what the config switch
`model.gradient_checkpointing` does) and with and without bf16 autocast (Lightning's `bf16-mixed`).
Each setting runs one untimed step first (optimizer state allocated), then the measured step.
Memory: CUDA `max_memory_allocated` (absolute peak, weights + optimizer state included) or, on the CPU,
the process RSS peak sampled during the step (`benchmarks.timing.peak_memory`).
"""

from __future__ import annotations

import contextlib
import time

import torch

from benchmarks.segmentation import PROMPT, parameter_millions, tokenizer_for_benchmarks
from benchmarks.timing import Context, peak_memory, progress, release_memory, synchronize
from ldznet.config import model_defaults, optim_defaults
from ldznet.lit_module import SegmenterLitModule
from ldznet.stable_diffusion import build_random_components, sd_architecture


def reduced_architecture() -> dict:
    """SD v1's topology (16 spatial-attention blocks, same names) at a fifth of the UNet width and a quarter of
    the VAE width, with SD's CLIP text encoder: what a shared CPU can train in seconds."""
    architecture = sd_architecture()
    architecture["unet"]["block_out_channels"] = [64, 128, 256, 256]
    architecture["vae"]["block_out_channels"] = [32, 64, 128, 128]
    return architecture


def plan(context: Context) -> dict:
    if context.quick:
        return {"architecture": "tiny", "architecture_label": "tiny (ldznet.tiny_configs)", "image_size": 64,
                "batches": [1, 2], "checkpointing": [False, True], "bf16": [False, True],
                "only": [(1, False, False), (1, True, True)],
                "reductions": ["quick: tiny SD topology at 64x64; two settings only (batch 1 plain, batch 1 with "
                               "checkpointing and bf16)"]}
    if context.full:
        return {"architecture": "sd", "architecture_label": "SD v1 (925 M trainable)", "image_size": 384,
                "batches": [1, 2, 4], "checkpointing": [False, True], "bf16": [False, True], "reductions": []}
    return {"architecture": "reduced", "architecture_label": "SD topology, UNet width / 5, VAE width / 4",
            "image_size": 256, "batches": [1, 2, 4], "checkpointing": [False, True], "bf16": [False, True],
            "reductions": ["cpu: reduced widths (UNet 64-128-256-256, VAE 32-64-128-128, SD's CLIP) at 256x256: "
                           "an SD-sized LD-ZNet step needs ~23 GB for weights, gradients, AdamW and EMA alone, "
                           "more than this shared machine has, and minutes per step",
                           "cpu: memory = process RSS sampled every 2 ms (approximate; CUDA reports the allocator "
                           "peak exactly)"]}


def build_module(settings: dict, tokenizer, variant: str = "ldznet"):
    architecture = reduced_architecture() if settings["architecture"] == "reduced" else settings["architecture"]
    components = build_random_components(architecture, tokenizer)
    # gradient checkpointing off as built (set_checkpointing switches it per row); base.yaml's optimiser, EMA on
    return SegmenterLitModule(model_defaults(variant=variant, image_size=settings["image_size"],
                                             gradient_checkpointing=False), optim_defaults(ema=True),
                              components=components)


def set_checkpointing(module, enabled: bool) -> None:
    unet = module.model.unet
    if enabled:
        unet.enable_gradient_checkpointing()
    else:
        unet.disable_gradient_checkpointing()


def training_step(module, optimizer, batch: dict, bf16: bool, device: torch.device):
    def step():
        autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with autocast:
            loss, _ = module._loss(batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        module.ema.update(module.model)

    return step


def make_batch(batch: int, size: int, device: torch.device) -> dict:
    generator = torch.Generator().manual_seed(batch)
    return {"image": (torch.rand(batch, 3, size, size, generator=generator) * 2 - 1).to(device),
            "mask": (torch.rand(batch, 1, size, size, generator=generator) > 0.5).float().to(device),
            "prompt": [PROMPT] * batch}


def run(context: Context) -> dict:
    settings = plan(context)
    device = context.device
    module = build_module(settings, tokenizer_for_benchmarks()).to(device).train()
    params = parameter_millions(module.model)
    trainable = [p for p in module.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-6, weight_decay=0.01)
    rows = []
    for checkpointing in settings["checkpointing"]:
        set_checkpointing(module, checkpointing)
        for bf16 in settings["bf16"]:
            for batch_size in settings["batches"]:
                if "only" in settings and (batch_size, checkpointing, bf16) not in settings["only"]:
                    continue
                batch = make_batch(batch_size, settings["image_size"], device)
                step = training_step(module, optimizer, batch, bf16, device)
                step()  # untimed: optimizer state, allocator caches
                with peak_memory(device) as readings:
                    start = time.perf_counter()
                    step()
                    synchronize(device)
                    elapsed = (time.perf_counter() - start) * 1000.0
                progress(f"batch {batch_size} checkpointing {checkpointing} bf16 {bf16}: peak "
                         f"{readings[0].peak_mib:.0f} MiB (+{readings[0].increase_mib:.0f}), {elapsed:.0f} ms")
                rows.append({"batch": batch_size, "gradient_checkpointing": checkpointing,
                             "precision": "bf16-mixed" if bf16 else "fp32", **readings[0].as_dict(),
                             "step_ms": elapsed})
                del batch, step
                release_memory(device)
    baselines = {row["batch"]: row for row in rows if not row["gradient_checkpointing"] and row["precision"] == "fp32"}
    key = "peak_mib" if device.type == "cuda" else "peak_increase_mib"
    ratios = []
    for row in rows:
        base = baselines.get(row["batch"])
        if base is None or row is base or not base[key]:
            continue
        ratios.append({"setting": f"batch {row['batch']}, checkpointing {row['gradient_checkpointing']}, "
                                  f"{row['precision']}", "compared_with": "same batch, no checkpointing, fp32",
                       "memory_ratio": row[key] / base[key], "time_ratio": row["step_ms"] / base["step_ms"]})
    del module, optimizer
    release_memory(device)
    what = "absolute peak (CUDA allocator)" if device.type == "cuda" else "peak RSS increase during the step"
    return {
        "name": "memory",
        "title": f"Peak memory of one LD-ZNet training step at {settings['image_size']}x{settings['image_size']}",
        "settings": {k: v for k, v in settings.items() if k != "reductions"},
        "reductions": settings["reductions"],
        "tables": [
            {"title": f"Training step ({settings['architecture_label']}; trainable "
                      f"{params['trainable_params_m']} M of {params['total_params_m']} M parameters; their fp32 "
                      f"gradients alone: {params['trainable_params_m'] * 4e6 / 2**20:.0f} MiB)",
             "columns": ["batch", "gradient_checkpointing", "precision", "memory_kind", "baseline_mib", "peak_mib",
                         "peak_increase_mib", "step_ms"], "rows": rows},
            {"title": f"Ratios ({what})",
             "columns": ["setting", "compared_with", "memory_ratio", "time_ratio"], "rows": ratios},
        ],
        "notes": ["One step = BCE-with-logits loss of SegmenterLitModule, backward, AdamW, EMA update; the "
                  "measured step follows one untimed step of the same setting.",
                  "baseline_mib = memory before the step (weights, gradients freed, AdamW and EMA state).",
                  "The peak increase holds the gradients of the trainable weights (allocated by every backward) "
                  "plus the activations; where the gradients dominate (small widths, as in the CPU set), "
                  "checkpointing and bf16 show little saving, and the RSS reading is noisy."],
    }
