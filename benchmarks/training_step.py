"""Where one Chapter-3 training step spends its time, and what each AdamW implementation costs (§3.3 training).

One step = what `ldznet.lit_module.SegmenterLitModule` does per batch: the loss (`_loss`: frozen CLIP text,
the input stage — learnable RGB stem, or the frozen VAE encoder for ZNet and LD-ZNet — the frozen LDM features
for LD-ZNet, the trainable UNet and head, BCE with logits), backward, the AdamW step and the EMA update of the
trainable weights. Each phase is timed on its own (data loading excluded), for RGBNet, ZNet and LD-ZNet on
the same random batch, one model after the other (an SD-sized model with its AdamW and EMA state takes ~20 GB:
the three are not held together).

The optimiser table runs AdamW over each model's trainable weights with three implementations —
the for-loop one (the default on the CPU), `foreach=True` and `fused=True` (`performance.fused_optimizer`,
common.performance) — from the same weights on the same fixed gradients, and says whether each ends
bit-identical to the for-loop one: an implementation that is, can be switched on without changing any
result; one that is not changes the numerics, and runs made with the other one are not reproduced bit for bit.

The batch-size table times the whole step at several batch sizes and gives each one's time per sample as a
ratio to the smallest batch's: at the miniature's size a step is mostly per-operation overhead, so a larger
batch is cheaper per sample (whether the curves then need as many samples is a training question:
experiments/demo/study_chapter3_batch_probe.yaml).
"""

from __future__ import annotations

import time

import torch

from benchmarks.memory import build_module, make_batch
from benchmarks.segmentation import NAMES, VARIANTS, parameter_millions, tokenizer_for_benchmarks
from benchmarks.timing import Context, progress, release_memory, summarize, synchronize
from ldznet.lit_module import SegmenterLitModule

PHASES = ("loss (forward)", "backward", "AdamW step", "EMA update")
IMPLEMENTATIONS = {"for-loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def plan(context: Context) -> dict:
    if context.quick:
        return {"architecture": "tiny", "image_size": 64, "batch": 2, "warmup": 1, "steps": 2,
                "optimizer_steps": 3, "batch_sizes": [2, 4],
                "reductions": ["quick: 1 warm-up + 2 timed steps at batch 2"]}
    if context.full:
        return {"architecture": "sd", "image_size": 384, "batch": 4, "warmup": 3, "steps": 10,
                "optimizer_steps": 10, "batch_sizes": [1, 2, 4], "reductions": []}
    return {"architecture": "tiny", "image_size": 64, "batch": 8, "warmup": 5, "steps": 30, "optimizer_steps": 25,
            "batch_sizes": [8, 16, 32],
            "reductions": ["cpu: the tiny SD topology (ldznet.tiny_configs) at 64x64, batch 8: the miniature's "
                           "(make demo) scale, where the question of this benchmark arises; an SD-sized step "
                           "takes minutes on a CPU (benchmarks memory)"]}


def timed(device: torch.device, call) -> tuple[float, object]:
    synchronize(device)
    start = time.perf_counter()
    out = call()
    synchronize(device)
    return (time.perf_counter() - start) * 1000.0, out


def training_phases(module: SegmenterLitModule, optimizer, batch: dict, device: torch.device) -> dict[str, float]:
    """One training step, each phase timed (ms)."""
    loss_ms, (loss, _) = timed(device, lambda: module._loss(batch))
    backward_ms, _ = timed(device, loss.backward)
    step_ms, _ = timed(device, lambda: (optimizer.step(), optimizer.zero_grad(set_to_none=True)))
    ema_ms, _ = timed(device, lambda: module.ema.update(module.model))
    return dict(zip(PHASES, (loss_ms, backward_ms, step_ms, ema_ms)))


def timed_steps(module: SegmenterLitModule, batch: dict, settings: dict, device: torch.device) -> dict[str, list]:
    """`settings["warmup"]` untimed then `settings["steps"]` timed training steps on `batch`, with a fresh AdamW
    (the default on this device); ms of each phase of each timed step."""
    optimizer = torch.optim.AdamW([p for p in module.model.parameters() if p.requires_grad], lr=4e-4,
                                  weight_decay=0.01)
    times = {phase: [] for phase in PHASES}
    for step in range(settings["warmup"] + settings["steps"]):
        phases = training_phases(module, optimizer, batch, device)
        if step >= settings["warmup"]:
            for phase, ms in phases.items():
                times[phase].append(ms)
    return times


def batch_size_rows(module: SegmenterLitModule, name: str, settings: dict, device: torch.device,
                    measured: dict[int, dict[str, list]]) -> list[dict]:
    """The whole step (loss, backward, AdamW, EMA) at each of `settings["batch_sizes"]` (median over the timed
    steps; `measured` holds batch sizes already timed by `timed_steps`, e.g. the phase table's); time per sample
    as a ratio to the smallest batch size's."""
    rows = []
    for batch_size in settings["batch_sizes"]:
        times = measured.get(batch_size)
        if times is None:
            times = timed_steps(module, make_batch(batch_size, settings["image_size"], device), settings, device)
        step_ms = summarize([sum(step) for step in zip(*times.values())])["median_ms"]
        rows.append({"model": name, "batch": batch_size, "step ms": step_ms, "ms per sample": step_ms / batch_size})
    smallest = rows[0]["ms per sample"]
    for row in rows:
        row["per-sample time ratio"] = row["ms per sample"] / smallest
    return rows


def optimizer_rows(module: SegmenterLitModule, name: str, steps: int, device: torch.device) -> list[dict]:
    """AdamW implementations on copies of `module`'s trainable weights, on the same fixed gradients; the for-loop
    one first (the reference), each other compared with it as soon as it has run."""
    start = [p.detach().clone() for p in module.model.parameters() if p.requires_grad]
    generator = torch.Generator().manual_seed(1)
    gradients = [(torch.randn(p.shape, generator=generator) * 1e-3).to(device) for p in start]
    reference, reference_ms, rows = None, None, []
    for label, options in IMPLEMENTATIONS.items():
        weights = [torch.nn.Parameter(p.clone()) for p in start]
        row = {"model": name, "implementation": label, "median_step_ms": None, "time_ratio_to_for_loop": None,
               "bit_identical_to_for_loop": None, "max_abs_difference": None, "note": ""}
        try:
            optimizer = torch.optim.AdamW(weights, lr=4e-4, weight_decay=0.01, **options)
        except (RuntimeError, ValueError) as error:  # e.g. no fused kernel for this device
            rows.append({**row, "note": f"not available: {error}"})
            continue
        elapsed = []
        for _ in range(steps):
            for weight, gradient in zip(weights, gradients):
                weight.grad = gradient.clone()
            ms, _ = timed(device, optimizer.step)
            elapsed.append(ms)
        median = summarize(elapsed)["median_ms"]
        final = [w.detach() for w in weights]
        del optimizer
        if reference is None:
            reference, reference_ms = final, median
        difference = max((a - b).abs().max().item() for a, b in zip(final, reference))
        rows.append({**row, "median_step_ms": median, "time_ratio_to_for_loop": median / reference_ms,
                     "bit_identical_to_for_loop": all(torch.equal(a, b) for a, b in zip(final, reference)),
                     "max_abs_difference": f"{difference:.1e}"})
        del weights, final
    return rows


def run(context: Context) -> dict:
    settings = plan(context)
    device = context.device
    tokenizer = tokenizer_for_benchmarks()
    batch = make_batch(settings["batch"], settings["image_size"], device)
    phase_rows, optimizer_table, batch_table = [], [], []
    for variant in VARIANTS:
        torch.manual_seed(0)
        module = build_module(settings, tokenizer, variant).to(device).train()
        trainable = [p for p in module.model.parameters() if p.requires_grad]
        times = timed_steps(module, batch, settings, device)
        medians = {phase: summarize(v)["median_ms"] for phase, v in times.items()}
        total = sum(medians.values())
        phase_rows.append({"model": NAMES[variant], "trainable_tensors": len(trainable),
                           "trainable_params_m": parameter_millions(module.model)["trainable_params_m"],
                           **{f"{phase} ms": ms for phase, ms in medians.items()}, "step ms": total,
                           "AdamW + EMA share": (medians["AdamW step"] + medians["EMA update"]) / total})
        del trainable
        optimizer_table += optimizer_rows(module, NAMES[variant], settings["optimizer_steps"], device)
        batch_table += batch_size_rows(module, NAMES[variant], settings, device, {settings["batch"]: times})
        progress(f"{NAMES[variant]}: {total:.0f} ms per step; AdamW implementations and batch sizes compared")
        del module
        release_memory(device)
    return {
        "name": "training_step",
        "title": f"One Chapter-3 training step, phase by phase, at {settings['image_size']}x{settings['image_size']}, "
                 f"batch {settings['batch']}",
        "settings": {k: v for k, v in settings.items() if k != "reductions"},
        "reductions": settings["reductions"],
        "tables": [
            {"title": f"Median ms per phase over {settings['steps']} steps after {settings['warmup']} warm-up "
                      f"(the default AdamW of this device; data loading excluded)",
             "columns": ["model", "trainable_tensors", "trainable_params_m", *(f"{p} ms" for p in PHASES), "step ms",
                         "AdamW + EMA share"], "rows": phase_rows},
            {"title": f"AdamW implementations: median ms per step over {settings['optimizer_steps']} steps, and "
                      "whether the weights end bit-identical to the for-loop implementation's",
             "columns": ["model", "implementation", "median_step_ms", "time_ratio_to_for_loop",
                         "bit_identical_to_for_loop", "max_abs_difference", "note"], "rows": optimizer_table},
            {"title": f"Batch size: median ms of the whole step over {settings['steps']} steps after "
                      f"{settings['warmup']} warm-up, per sample, and the time per sample as a ratio to batch "
                      f"{settings['batch_sizes'][0]}'s",
             "columns": ["model", "batch", "step ms", "ms per sample", "per-sample time ratio"],
             "rows": batch_table},
        ],
        "notes": ["The phases are those of SegmenterLitModule.training_step and optimizer_step, outside Lightning "
                  "(its own overhead per step is not included).",
                  "On the CPU PyTorch's default AdamW is the for-loop implementation; foreach and fused are what "
                  "`foreach=True` and `performance.fused_optimizer=true` select.",
                  "A bit-identical implementation can be switched on without changing any result; the others "
                  "change the numerics (all earlier runs would no longer be reproduced bit for bit)."],
    }
