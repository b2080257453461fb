"""Throughput switches of both chapters (config node `performance:`; docs/benchmarks.md "Throughput switches").

None of them changes what is computed, only how fast (checked on the CPU against the plain run, tests/common/
test_performance.py; measured on a GPU by `make gpu-check`):

    channels_last     convolution weights (and so the activations) in NHWC layout: the layout tensor cores want
    fused_optimizer   Adam / AdamW with `fused=True` (one kernel for all parameters): auto = on CUDA only,
                      true = always (also the CPU kernel), false = never
    attention         diffusers' attention processor: sdpa (AttnProcessor2_0 = F.scaled_dot_product_attention,
                      flash / memory-efficient kernels on GPUs) or math (the explicit softmax(QK^T)V of AttnProcessor)
    compile           torch.compile of the networks that allow it (nn.Module.compile in place, so state-dict names do
                      not change); if compiling fails, the network runs eager and a warning says why
    compile_backend   torch.compile backend (inductor; aot_eager / eager for quick checks)

bf16 is Lightning's `trainer.precision: bf16-mixed` and gradient checkpointing LD-ZNet's
`model.gradient_checkpointing`; both are already config switches and are not repeated here.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

PERFORMANCE_DEFAULTS: dict[str, Any] = {
    "channels_last": False,
    "fused_optimizer": "auto",
    "attention": "sdpa",
    "compile": False,
    "compile_backend": "inductor",
}
ATTENTION_CHOICES = ("sdpa", "math")
FUSED_CHOICES = ("auto", True, False)


def performance_options(node: Mapping | None) -> dict[str, Any]:
    """The `performance:` node with defaults filled in; unknown keys or values raise naming the key."""
    given = {} if node is None else dict(node)
    unknown = sorted(set(given) - set(PERFORMANCE_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown performance option(s) {unknown}; valid: {sorted(PERFORMANCE_DEFAULTS)}")
    options = {**PERFORMANCE_DEFAULTS, **given}
    if options["fused_optimizer"] not in FUSED_CHOICES:
        raise ValueError(f"performance.fused_optimizer must be auto, true or false, got {options['fused_optimizer']!r}")
    if options["attention"] not in ATTENTION_CHOICES:
        raise ValueError(f"performance.attention must be one of {ATTENTION_CHOICES}, got {options['attention']!r}")
    for key in ("channels_last", "compile"):
        if not isinstance(options[key], bool):
            raise ValueError(f"performance.{key} must be true or false, got {options[key]!r}")
    return options


def fused_kwargs(options: Mapping | None, parameters: Iterable[torch.Tensor]) -> dict[str, bool]:
    """{"fused": True} when the fused Adam/AdamW kernel is asked for and available for these parameters, else {}.

    auto: every parameter on CUDA (the fused kernel's home); true: also on the CPU (torch >= 2.4 has a fused CPU
    kernel); a parameter on a device without a fused kernel raises rather than silently running unfused."""
    setting = performance_options(options)["fused_optimizer"]
    if setting is False:
        return {}
    devices = {parameter.device.type for parameter in parameters}
    if setting == "auto":
        return {"fused": True} if devices == {"cuda"} else {}
    supported = {"cuda", "cpu", "mps", "xpu"}
    if not devices <= supported:
        raise ValueError(f"performance.fused_optimizer=true: no fused Adam kernel for device(s) {sorted(devices)}")
    return {"fused": True}


def set_attention(module: nn.Module, kind: str) -> int:
    """Put every diffusers `Attention` in `module` on the processor `kind` (sdpa | math); returns how many.

    diffusers picks AttnProcessor2_0 (SDPA) by default on torch 2; `math` is the reference formulation."""
    from diffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_0

    if kind not in ATTENTION_CHOICES:
        raise ValueError(f"attention must be one of {ATTENTION_CHOICES}, got {kind!r}")
    count = 0
    for submodule in module.modules():
        if isinstance(submodule, Attention):
            submodule.set_processor(AttnProcessor2_0() if kind == "sdpa" else AttnProcessor())
            count += 1
    return count


def attention_processors(module: nn.Module) -> dict[str, int]:
    """{processor class name: count} over the diffusers `Attention` modules of `module` (what runs)."""
    from diffusers.models.attention_processor import Attention

    counts: dict[str, int] = {}
    for submodule in module.modules():
        if isinstance(submodule, Attention):
            name = type(submodule.processor).__name__
            counts[name] = counts.get(name, 0) + 1
    return counts


def compile_in_place(networks: Mapping[str, nn.Module | None], backend: str = "inductor") -> dict[str, str]:
    """`nn.Module.compile()` each network (same object, same state-dict names); {name: "compiled" | reason}.

    A network that cannot be wrapped stays eager with a warning. Failures that appear only when the compiled
    code first runs (a backend error, an unsupported op) also fall back to eager: torch._dynamo's
    `suppress_errors` runs the original code and logs the error."""
    import torch._dynamo

    torch._dynamo.config.suppress_errors = True
    # many same-class blocks of different shapes (UNets): allow more compiled variants per code object
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    status: dict[str, str] = {}
    for name, network in networks.items():
        if network is None:
            continue
        try:
            network.compile(backend=backend)
            status[name] = "compiled"
        except Exception as error:  # noqa: BLE001 - reported and logged; training goes on eager
            status[name] = f"eager ({type(error).__name__}: {error})"
            message = f"torch.compile of {name} failed, running it eager: {type(error).__name__}: {error}"
            log.warning(message)
            warnings.warn(message, RuntimeWarning, stacklevel=2)
    return status


def apply_performance(module: nn.Module, options: Mapping | None, compile_targets: Mapping[str, nn.Module | None]
                      ) -> dict[str, Any]:
    """Apply the switches to a LightningModule before training; `module.performance` keeps the options (its
    configure_optimizers reads `fused_optimizer` from there). Returns a record of what was done."""
    options = performance_options(options)
    module.performance = options
    record: dict[str, Any] = {"options": dict(options)}
    if options["channels_last"]:
        module.to(memory_format=torch.channels_last)
    record["attention_modules"] = set_attention(module, options["attention"])
    if options["compile"]:
        record["compile"] = compile_in_place(compile_targets, str(options["compile_backend"]))
    return record
