"""Inference cost of the Chapter 3 segmenters: RGBNet, ZNet and LD-ZNet side by side (dissertation §3.4.4).

The paper reports 62, 55 and 101 ms per image on an RTX A6000 (LD-ZNet / ZNet = 1.84). We time the project's
own models (`ldznet.models.build_segmenter`) with the SD v1 architecture and random weights (timing does not
depend on the values): one call = the whole per-image inference, prompt tokenisation and CLIP text encoder
included, images of side 384. Variants: batch 1 and 8, fp32 and bf16 (weights and inputs cast), eager and
`torch.compile` (UNets, VAE encoder / RGB stem compiled in place). The frozen LDM of LD-ZNet stops after
spatial-attention block 10 (`ldznet.models.ldm_features`); `block10` measures that saving against running
the frozen UNet whole.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator

import torch
from torch import nn

from benchmarks.timing import Context, progress, release_memory, time_calls
from ldznet.config import model_defaults
from ldznet.models import build_segmenter
from ldznet.stable_diffusion import build_random_components, load_tokenizer
from ldznet.tiny_configs import write_tiny_tokenizer

VARIANTS = ("rgbnet", "znet", "ldznet")
NAMES = {"rgbnet": "RGBNet", "znet": "ZNet", "ldznet": "LD-ZNet"}
PAPER_MS = {"rgbnet": 62.0, "znet": 55.0, "ldznet": 101.0}  # §3.4.4, RTX A6000, per image on AIGI
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
PROMPT = "a photo of a cat."
COMPILE_SKIPPED_ON_CPU = ("torch.compile skipped on the CPU: inductor's C++ build of an SD-sized UNet takes many "
                          "minutes on a small shared CPU, longer than the whole benchmark budget")


def plan(context: Context) -> dict:
    """Sizes and repeat counts of each mode (cpu = documented reduced set; cuda = the issue's full set)."""
    if context.quick:
        return {"architecture": "tiny", "image_size": 64, "batches": [1], "dtypes": ["fp32", "bf16"],
                "compile": [False], "warmup": 0, "repeats": 1, "hold_all_models": False,
                "reductions": ["quick: tiny SD topology (ldznet.tiny_configs) at 64x64, batch 1, one call, no compile"]}
    if context.full:
        return {"architecture": "sd", "image_size": 384, "batches": [1, 8], "dtypes": ["fp32", "bf16"],
                "compile": [False, True], "warmup": 3, "repeats": 10, "hold_all_models": True, "reductions": []}
    return {"architecture": "sd", "image_size": 384, "batches": [1], "dtypes": ["fp32", "bf16"],
            "compile": [False], "warmup": 0, "repeats": 1, "hold_all_models": False,
            "reductions": ["cpu: batch 1 only (batch 8 of an SD-sized LD-ZNet takes minutes per call on a CPU)",
                           "cpu: one timed call per variant, no warm-up call (a call takes seconds; CPU kernels "
                           "need no autotuning, a first call measured ~3% slower than the next in a probe)",
                           "cpu: " + COMPILE_SKIPPED_ON_CPU,
                           "cpu: models built one after the other (three SD-sized models do not fit in RAM "
                           "together), so the ratios compare consecutive measurements"]}


# ------------------------------------------------------------------------------------------------ building
def tokenizer_for_benchmarks():
    """A small CLIP BPE tokenizer written to a temporary folder (no download; ids fit every text encoder)."""
    with tempfile.TemporaryDirectory() as folder:
        write_tiny_tokenizer(folder)
        return load_tokenizer(folder)


def build_model(variant: str, architecture: str, image_size: int, tokenizer, gradient_checkpointing: bool = False
                ) -> nn.Module:
    """The project's segmenter of `variant`, on freshly built random SD components of `architecture`."""
    components = build_random_components(architecture, tokenizer)
    return build_segmenter(model_defaults(variant=variant, image_size=image_size,
                                          gradient_checkpointing=gradient_checkpointing), components)


def parameter_millions(model: nn.Module) -> dict[str, float]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable_params_m": round(trainable / 1e6, 2), "total_params_m": round(total / 1e6, 2)}


# ------------------------------------------------------------------------------------------------ compile
def compile_targets(model: nn.Module) -> dict[str, nn.Module]:
    """The heavy submodules compiled in place (names unchanged, so LD-ZNet's injection still finds them).

    The trainable UNet, the VAE encoder or RGB stem are compiled whole. The frozen LDM UNet of LD-ZNet carries
    forward hooks that end its forward early, so there its res-blocks and transformer blocks (the compute,
    hook-free) are compiled one by one instead of the UNet.
    """
    targets = {"unet": model.unet}
    if hasattr(model, "rgb_stem"):
        targets["rgb_stem"] = model.rgb_stem
    if hasattr(model, "latent_encoder"):
        targets["vae.encoder"] = model.latent_encoder.vae.encoder
    if hasattr(model, "ldm_features"):
        for name, module in model.ldm_features.unet.named_modules():
            if name.rsplit(".", 2)[-2:-1] in (["resnets"], ["transformer_blocks"]):
                targets[f"ldm_unet.{name}"] = module
    return targets


def set_compiled(modules: dict[str, nn.Module], enabled: bool) -> None:
    """Switch `nn.Module.compile()` on or off (the compiled callable is kept, so switching back is free)."""
    if enabled:
        import torch._dynamo  # deferred: ~1.2 s to import (measured), needed only by the compiled variants (CUDA)

        # many same-class blocks of different shapes: allow more compiled variants per code object
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
        torch._dynamo.config.accumulated_cache_size_limit = max(
            torch._dynamo.config.accumulated_cache_size_limit, 512)
    for module in modules.values():
        if enabled:
            if getattr(module, "_benchmark_compiled", None) is None:
                module.compile()
                module._benchmark_compiled = module._compiled_call_impl
            module._compiled_call_impl = module._benchmark_compiled
        else:
            module._compiled_call_impl = None


# ------------------------------------------------------------------------------------------------ running
def inference_call(model: nn.Module, images: torch.Tensor, prompts: list[str]) -> Callable[[], object]:
    def call():
        with torch.no_grad():
            return model(images, prompts)

    return call


def inputs(batch: int, size: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, list[str]]:
    generator = torch.Generator().manual_seed(batch)
    images = torch.rand(batch, 3, size, size, generator=generator) * 2 - 1
    return images.to(device, dtype), [PROMPT] * batch


def block10_calls(model: nn.Module, batch: int, size: int, dtype: torch.dtype, device: torch.device
                  ) -> dict[str, Callable[[], object]]:
    """The frozen LDM of LD-ZNet: stopped after its last used block (as in the model) vs the whole UNet."""
    ldm = model.ldm_features
    with torch.no_grad():
        text = model.text_conditioning([PROMPT] * batch).to(dtype)
        generator = torch.Generator().manual_seed(0)
        latent = torch.randn(batch, 4, size // 8, size // 8, generator=generator).to(device, dtype)
        timesteps = torch.full((batch,), ldm.eval_timestep, dtype=torch.long, device=device)
        noisy = ldm.add_noise(latent, torch.randn_like(latent), timesteps)

    def stopped():
        with torch.no_grad():
            return ldm.features_of_noisy(noisy, timesteps, text)

    def whole():
        with torch.no_grad():
            return ldm.unet(noisy, timesteps, encoder_hidden_states=text)

    return {"stopped": stopped, "whole": whole}


@contextlib.contextmanager
def models_in_turn(variants: tuple[str, ...], settings: dict, tokenizer, device: torch.device
                   ) -> Iterator[Iterator[dict[str, nn.Module]]]:
    """Groups of models to measure together: all at once (CUDA) or one after the other (CPU RAM)."""

    def groups():
        if settings["hold_all_models"]:
            yield {v: build_model(v, settings["architecture"], settings["image_size"], tokenizer).eval().to(device)
                   for v in variants}
            return
        for variant in variants:
            model = build_model(variant, settings["architecture"], settings["image_size"], tokenizer)
            yield {variant: model.eval().to(device)}
            del model
            release_memory(device)

    yield groups()
    release_memory(device)


def timed(calls: dict[str, Callable[[], object]], device: torch.device, settings: dict
          ) -> tuple[dict[str, dict], dict[str, Exception]]:
    """Interleaved timings of all calls; if that fails, each call alone, so one failure hides no other."""
    try:
        return time_calls(calls, device, settings["warmup"], settings["repeats"]), {}
    except Exception as error:  # noqa: BLE001 - retried one by one below
        if len(calls) == 1:
            return {}, {name: error for name in calls}
    timings, errors = {}, {}
    for variant, call in calls.items():
        try:
            timings[variant] = time_calls({variant: call}, device, settings["warmup"], settings["repeats"])[variant]
        except Exception as error:  # noqa: BLE001 - recorded in the results, the other variants go on
            errors[variant] = error
    return timings, errors


def measure_group(models: dict[str, nn.Module], settings: dict, context: Context, rows: list, block10: list,
                  notes: list) -> None:
    device, size = context.device, settings["image_size"]
    targets = {variant: compile_targets(model) for variant, model in models.items()}
    for dtype_name in settings["dtypes"]:
        dtype = DTYPES[dtype_name]
        for model in models.values():
            model.to(dtype)
        for compiled in settings["compile"]:
            mode = "compile" if compiled else "eager"
            for variant in models:
                set_compiled(targets[variant], compiled)
            for batch in settings["batches"]:
                images, prompts = inputs(batch, size, dtype, device)
                calls = {variant: inference_call(model, images, prompts) for variant, model in models.items()}
                timings, errors = timed(calls, device, settings)
                for variant, error in errors.items():
                    rows.append({"model": NAMES[variant], "batch": batch, "dtype": dtype_name, "mode": mode,
                                 "status": f"failed: {type(error).__name__}: {str(error)[:200]}"})
                    notes.append(f"{NAMES[variant]} {mode} {dtype_name} batch {batch} failed: {error!r:.300}")
                for variant, timing in timings.items():
                    progress(f"{NAMES[variant]} {dtype_name} {mode} batch {batch}: "
                             f"{timing['median_ms'] / batch:.1f} ms per image")
                    rows.append({"model": NAMES[variant], "batch": batch, "dtype": dtype_name, "mode": mode,
                                 "ms_per_image": timing["median_ms"] / batch, "ms_per_call": timing["median_ms"],
                                 "min_ms": timing["min_ms"], "max_ms": timing["max_ms"],
                                 "repeats": timing["repeats"], "status": "ok"})
            if not compiled and "ldznet" in models:
                for batch in settings["batches"]:
                    try:
                        timings = time_calls(block10_calls(models["ldznet"], batch, size, dtype, device), device,
                                             settings["warmup"], settings["repeats"])
                    except Exception as error:  # noqa: BLE001 - recorded, the rest goes on
                        notes.append(f"block-10 study {dtype_name} batch {batch} failed: {error!r:.300}")
                        continue
                    stopped, whole = timings["stopped"]["median_ms"], timings["whole"]["median_ms"]
                    progress(f"frozen LDM {dtype_name} batch {batch}: stopped {stopped:.1f} ms, whole {whole:.1f} ms")
                    block10.append({"batch": batch, "dtype": dtype_name, "stopped_ms_per_image": stopped / batch,
                                    "whole_ms_per_image": whole / batch,
                                    "saved_ms_per_image": (whole - stopped) / batch,
                                    "saved_fraction": (whole - stopped) / whole if whole else None})
        for variant in models:
            set_compiled(targets[variant], False)


def ratios(rows: list[dict], block10: list[dict]) -> list[dict]:
    """LD-ZNet/ZNet and RGBNet/ZNet per setting, bf16/fp32 and compile/eager per model, block-10 share."""
    ok = {(r["model"], r["batch"], r["dtype"], r["mode"]): r["ms_per_image"] for r in rows if r["status"] == "ok"}
    settings = sorted({key[1:] for key in ok}, key=lambda key: (key[2], key[1], key[0]))
    out = []
    for model in ("LD-ZNet", "RGBNet"):
        paper = PAPER_MS["ldznet" if model == "LD-ZNet" else "rgbnet"] / PAPER_MS["znet"]
        for batch, dtype, mode in settings:
            value, znet = ok.get((model, batch, dtype, mode)), ok.get(("ZNet", batch, dtype, mode))
            if value and znet:
                out.append({"ratio": f"{model} / ZNet", "setting": f"batch {batch}, {dtype}, {mode}",
                            "ours": value / znet, "paper": paper})
    for model in NAMES.values():
        for batch, dtype, mode in settings:
            value = ok.get((model, batch, dtype, mode))
            if value and dtype == "bf16" and (fp32 := ok.get((model, batch, "fp32", mode))):
                out.append({"ratio": f"{model} bf16 / fp32", "setting": f"batch {batch}, {mode}",
                            "ours": value / fp32, "paper": None})
            if value and mode == "compile" and (eager := ok.get((model, batch, dtype, "eager"))):
                out.append({"ratio": f"{model} compile / eager", "setting": f"batch {batch}, {dtype}",
                            "ours": value / eager, "paper": None})
    for entry in block10:
        ldznet = ok.get(("LD-ZNet", entry["batch"], entry["dtype"], "eager"))
        if ldznet:
            out.append({"ratio": "LD-ZNet if its frozen UNet ran whole / as built (stops after block 10)",
                        "setting": f"batch {entry['batch']}, {entry['dtype']}, eager",
                        "ours": (ldznet + entry["saved_ms_per_image"]) / ldznet, "paper": None})
    return out


def run(context: Context) -> dict:
    settings = plan(context)
    rows: list[dict] = []
    block10: list[dict] = []
    notes: list[str] = []
    params: list[dict] = []
    tokenizer = tokenizer_for_benchmarks()
    with models_in_turn(VARIANTS, settings, tokenizer, context.device) as groups:
        for models in groups:
            for variant, model in models.items():
                params.append({"model": NAMES[variant], **parameter_millions(model)})
            measure_group(models, settings, context, rows, block10, notes)
            del models
    paper_rows = [{"model": NAMES[v], "batch": 1, "dtype": "paper (A6000)", "mode": "paper", "ms_per_image": ms,
                   "status": "paper §3.4.4"} for v, ms in PAPER_MS.items()]
    size = settings["image_size"]
    return {
        "name": "segmentation",
        "title": f"Segmentation inference at {size}x{size} (dissertation §3.4.4)",
        "settings": {k: v for k, v in settings.items() if k != "reductions"},
        "reductions": settings["reductions"],
        "tables": [
            {"title": "ms per image (median; one call = tokenise + CLIP text + input stage + UNet(s) + head)",
             "columns": ["model", "batch", "dtype", "mode", "ms_per_image", "ms_per_call", "min_ms", "max_ms",
                         "repeats", "status"], "rows": paper_rows + rows},
            {"title": "Ratios (paper: LD-ZNet/ZNet = 101/55 = 1.84, RGBNet/ZNet = 62/55 = 1.13)",
             "columns": ["ratio", "setting", "ours", "paper"], "rows": ratios(rows, block10)},
            {"title": "Frozen LDM of LD-ZNet: stopped after spatial-attention block 10 vs the whole UNet",
             "columns": ["batch", "dtype", "stopped_ms_per_image", "whole_ms_per_image", "saved_ms_per_image",
                         "saved_fraction"], "rows": block10},
            {"title": "Parameters (millions; paper: LD-ZNet 925 M trainable)",
             "columns": ["model", "trainable_params_m", "total_params_m"], "rows": params},
        ],
        "notes": notes + ["Random weights (timing does not depend on their values). bf16 = weights and inputs "
                          "cast to bfloat16 (pure bf16 inference)."],
    }
