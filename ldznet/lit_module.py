"""Lightning training of the Chapter 3 segmenters (dissertation §3.3; docs/ref-ldznet.md §3.1).

- Loss: binary cross-entropy with logits over all pixels at the input resolution.
- Optimiser: AdamW (the released code; the dissertation says Adam: `optim.optimizer: adam`) with
  lr = base_learning_rate x batch size x devices x gradient accumulation, the CompVis scaling the paper
  describes as "5e-7 per mini-batch sample, per gpu" (8 GPUs x batch 4 -> 1.6e-5).
- ReduceLROnPlateau (factor 0.5, patience 1) on the epoch-mean training loss, as the released config. An epoch
  is one pass over the training set whatever the device count (EpochStepSampler shards it), so the patience
  keeps its meaning.
- EMA of the trainable weights (decay 0.9999 with the (1+n)/(10+n) warm-up of LDM's LitEma); validation,
  the exported segmenter and the evaluation use the EMA weights. The decay is per optimiser step at the
  reference global batch (`optim.reference_global_batch`, 32 = 4 x 8 GPUs in the paper); at global batch G it
  becomes decay ** (G / 32) with the warm-up counted in reference steps, so it averages over the same number
  of samples on any number of devices.
- Training length (`TrainingPlan`): `schedule.train_samples` samples, i.e. steps = samples / global batch with
  global batch = batch x devices x accumulation; printed as one line at the start of training.
- Gradient checkpointing (`model.gradient_checkpointing`) and bf16 (`trainer.precision: bf16-mixed`) are
  config switches; several GPUs run DDP through Lightning (common.trainer).
- Validation: loss and the CLIPSeg metrics (mIoU / IoU_FG best, AP) of the EMA model; TensorBoard gets mask
  overlays (image | ground truth | prediction) for the first validation batch and every `log_images_every`
  training steps. Under DDP the validation metrics are per-rank means (the final evaluation is single-process).
- Exact resume (docs/chapter3-models.md "Resuming"): the data order and each sample's augmentation are functions
  of (seed, sample number) (ldznet.data.EpochStepSampler / NumberedSamples); each sample's noise (VAE posterior
  draw, t and the noise of z_t) comes from its own generators seeded with (seed, sample number, stream)
  (ldznet.models.ldm_features.per_sample_noise), so it depends neither on the batch nor on the number of DDP
  ranks; validation keys the evaluation noise by dataset index the same way; the epoch-mean loss the plateau
  scheduler reads is accumulated here and stored in the checkpoint with the next sample number, so a resumed run
  continues exactly where the checkpoint was written.
- Divergence guard (common.resilience.DivergenceGuard) on the already-computed loss scalar: `stop` raises naming
  the step and the term before anything is written; `skip` drops the batch (no optimiser or EMA update) and logs
  `train/skipped_batches`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from common.config import require
from common.metrics.segmentation import ThresholdSweepMetrics
from common.performance import fused_kwargs
from common.resilience import ResilientModule
from common.runs import write_metrics
from common.trainer import first_epoch_end_after_resume
from common.viz import image_grid, overlay_mask
from ldznet.checkpoints import DEFAULT_TASK, save_segmenter, segmenter_header
from ldznet.models import build_segmenter, model_options
from ldznet.models.ldm_features import per_sample_noise
from ldznet.models.znet import initialise_head
from ldznet.stable_diffusion import components_from_config

log = logging.getLogger(__name__)

# The optimiser options (the `optim` node of experiments/chapter3/base.yaml, which holds their values: issue 14).
# head_learning_rate_scale: 1 = the paper; > 1 speeds up tiny CPU runs (the 55-weight head learns slowly).
# head_init: pytorch = the released code; unit_gain = the head starts as upsampling
# (ldznet.models.znet.initialise_head).
# ema_decay holds per optimiser step at reference_global_batch (the paper: 4 per GPU x 8 GPUs = 32).
OPTIM_KEYS = ("optimizer", "base_learning_rate", "batch_size", "weight_decay", "plateau_factor", "plateau_patience",
              "ema", "ema_decay", "head_learning_rate_scale", "head_init", "reference_global_batch")
OPTIM_SOURCE = "experiments/chapter3/base.yaml (node `optim`)"


def optim_options(optim_cfg: Mapping, source: str | Path = OPTIM_SOURCE) -> dict[str, Any]:
    """Plain dict of the optimiser options: every key of OPTIM_KEYS required (a MissingConfigKey naming
    `optim.<key>` and `source`; no default in code), an unknown key a ValueError."""
    optim = dict(optim_cfg)
    unknown = sorted(set(optim) - set(OPTIM_KEYS))
    if unknown:
        raise ValueError(f"unknown optim option(s) {unknown}; valid: {sorted(OPTIM_KEYS)}")
    for key in OPTIM_KEYS:
        require({"optim": optim}, "optim." + key, source)
    return optim


def ema_step_decay(decay: float, batch_ratio: float = 1.0, reference_steps: float | None = None) -> float:
    """Decay of one EMA update at global batch = batch_ratio x the reference one: min(decay, (1 + n) / (10 + n))
    ** batch_ratio, n = reference steps so far (None: after the warm-up)."""
    warm_up = 1.0 if reference_steps is None else (1 + reference_steps) / (10 + reference_steps)
    return min(float(decay), warm_up) ** float(batch_ratio)


class TrainableEMA:
    """Exponential moving average of the trainable parameters (float32 copies).

    `decay` holds per optimiser step at the reference global batch; `batch_ratio` = global batch / reference
    global batch. One step at ratio r shrinks the old average by min(decay, (1 + n) / (10 + n)) ** r with n the
    steps so far counted in reference steps (n += r per step): r steps of 1/r of the samples each equal one
    reference step. r = 1 is LDM's LitEma exactly.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, batch_ratio: float = 1.0):
        self.decay = float(decay)
        self.batch_ratio = float(batch_ratio)
        self.updates = 0
        self.reference_updates = 0.0
        self.shadow = {name: parameter.detach().float().clone() for name, parameter in model.named_parameters()
                       if parameter.requires_grad}
        self._tracked_cache: tuple[weakref.ref, list[tuple[str, nn.Parameter]]] | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_tracked_cache": None}  # a weak reference does not pickle (ddp_spawn, copies)

    def _tracked(self, model: nn.Module) -> list[tuple[str, nn.Parameter]]:
        """model.named_parameters(), listed once per model: the walk visits every module, the frozen LDM's too,
        ~10 ms per demo step on the CPU. Parameters keep their identity through .to(), load_state_dict and DDP."""
        cached = self._tracked_cache
        if cached is None or cached[0]() is not model:
            cached = self._tracked_cache = (weakref.ref(model), list(model.named_parameters()))
        return cached[1]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        self.reference_updates += self.batch_ratio
        decay = ema_step_decay(self.decay, self.batch_ratio, self.reference_updates)
        shadows, parameters = [], []
        for name, parameter in self._tracked(model):
            if name in self.shadow:
                shadow = self.shadow[name]
                if shadow.device != parameter.device:
                    shadow = self.shadow[name] = shadow.to(parameter.device)
                shadows.append(shadow)
                parameters.append(parameter.detach().float())
        if shadows:  # one foreach call: the per-tensor lerp_ loop cost ~5 ms of Python per demo step on the CPU
            torch._foreach_lerp_(shadows, parameters, 1.0 - decay)

    @contextlib.contextmanager
    def applied(self, model: nn.Module) -> Iterator[None]:
        """Temporarily put the EMA weights into `model`."""
        backup = {}
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if name in self.shadow:
                    backup[name] = parameter.detach().clone()
                    parameter.copy_(self.shadow[name].to(parameter.device, parameter.dtype))
        try:
            yield
        finally:
            with torch.no_grad():
                for name, parameter in model.named_parameters():
                    if name in backup:
                        parameter.copy_(backup[name])

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates, "reference_updates": self.reference_updates,
                "batch_ratio": self.batch_ratio,
                "shadow": {name: value.detach().cpu() for name, value in self.shadow.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        missing = sorted(set(self.shadow) - set(state["shadow"]))
        if missing:
            raise ValueError(f"EMA state lacks {len(missing)} trainable parameters, e.g. {missing[:3]}")
        self.decay, self.updates = float(state["decay"]), int(state["updates"])
        # reference steps so far (older checkpoints: one per update); the ratio stays the running one
        self.reference_updates = float(state.get("reference_updates", self.updates))
        self.shadow = {name: value.float().clone() for name, value in state["shadow"].items()}


def scaled_learning_rate(base: float, batch_size: int, devices: int, accumulation: int) -> float:
    """CompVis scaling: lr = base x batch x devices x accumulation (5e-7 x 4 x 8 x 1 = 1.6e-5)."""
    return float(base) * int(batch_size) * int(devices) * int(accumulation)


@dataclass(frozen=True)
class TrainingPlan:
    """What a training run will do, fixed at its start from the config and the device count (issue 12 item 7).

    The length is `schedule.train_samples` (samples, the same on any number of devices); the steps follow from
    the global batch. `trainer.max_steps`, when given, fixes the steps instead (tests, smoke runs).
    """

    batch_size: int  # per device
    devices: int
    accumulation: int
    global_batch: int  # batch x devices x accumulation: samples per optimiser step
    learning_rate: float  # base x global batch (CompVis scaling)
    steps: int  # optimiser steps
    samples: int  # steps x global batch
    epochs: float | None  # samples / training-set size
    reference_global_batch: int
    ema_decay: float | None  # per optimiser step at this global batch (None: EMA off)
    length_from: str  # "schedule.train_samples" or "trainer.max_steps"

    def line(self) -> str:
        epochs = f" = {self.epochs:.2f} epochs" if self.epochs is not None else ""
        ema = f", EMA decay {self.ema_decay:.6g}/step" if self.ema_decay is not None else ", EMA off"
        return (f"training plan: global batch {self.global_batch} ({self.batch_size} per device x {self.devices} "
                f"devices x {self.accumulation} accumulation), lr {self.learning_rate:.4g}, {self.steps} steps "
                f"= {self.samples} samples{epochs} (from {self.length_from}; reference global batch "
                f"{self.reference_global_batch}){ema}")

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def training_plan(optim_cfg: Mapping, batch_size: int, devices: int, accumulation: int = 1,
                  train_samples: int | None = None, max_steps: int | None = None,
                  dataset_size: int | None = None) -> TrainingPlan:
    """The run's plan: global batch, learning rate, steps (from samples, or `max_steps` when given), epochs and
    the per-step EMA decay at that global batch (`TrainableEMA`)."""
    optim = optim_options(optim_cfg)
    batch_size, devices, accumulation = int(batch_size), int(devices), int(accumulation)
    if min(batch_size, devices, accumulation) < 1:
        raise ValueError(f"batch size, devices and accumulation must be >= 1, got {batch_size}, {devices}, "
                         f"{accumulation}")
    global_batch = batch_size * devices * accumulation
    reference = int(optim["reference_global_batch"])
    if reference < 1:
        raise ValueError(f"optim.reference_global_batch must be >= 1, got {reference}")
    if max_steps is not None and int(max_steps) > 0:
        steps, length_from = int(max_steps), "trainer.max_steps"
    elif train_samples is not None:
        if int(train_samples) < 1:
            raise ValueError(f"schedule.train_samples must be >= 1, got {train_samples}")
        steps, length_from = -(-int(train_samples) // global_batch), "schedule.train_samples"  # ceil
    else:
        raise ValueError("no training length: set schedule.train_samples (samples, device-independent) or "
                         "trainer.max_steps")
    samples = steps * global_batch
    ema_decay = ema_step_decay(float(optim["ema_decay"]), global_batch / reference) if optim["ema"] else None
    return TrainingPlan(batch_size=batch_size, devices=devices, accumulation=accumulation, global_batch=global_batch,
                        learning_rate=scaled_learning_rate(optim["base_learning_rate"], batch_size, devices,
                                                           accumulation),
                        steps=steps, samples=samples,
                        epochs=samples / int(dataset_size) if dataset_size else None,
                        reference_global_batch=reference, ema_decay=ema_decay, length_from=length_from)


def overlay_panel(images: torch.Tensor, masks: torch.Tensor, logits: torch.Tensor, count: int = 4) -> torch.Tensor:
    """Rows of (image | ground truth in green | prediction p > 0.5 in red | p as grey), one (3, H', W') image."""
    images = ((images[:count].detach().float().cpu() + 1) / 2).clamp(0, 1)
    probability = torch.sigmoid(logits[:count].detach().float().cpu())
    truth = overlay_mask(images, masks[:count].cpu(), color=(0, 255, 0))
    predicted = overlay_mask(images, (probability > 0.5).float())
    rows = torch.stack([images, truth, predicted, probability.expand_as(images)], dim=1).flatten(0, 1)
    return image_grid(rows, nrow=4)


TRAIN_STATE_KEY = "ldznet_train_state"


class SegmenterLitModule(ResilientModule, pl.LightningModule):
    """Trains one segmenter variant; `model_cfg` / `optim_cfg` are the config's `model` / `optim` nodes, every key
    required (`ldznet.config.model_defaults` / `optim_defaults` give experiments/chapter3/base.yaml's).

    Seed, divergence guard, the step's seeded noise, the skipped-batch count and the resume state's save / load are
    common.resilience.ResilientModule's (as for SharinGAN); the data position is `next_sample_number`."""

    TRAIN_STATE_KEY = TRAIN_STATE_KEY

    def __init__(self, model_cfg: Mapping, optim_cfg: Mapping, task: str = DEFAULT_TASK,
                 log_images_every: int = 500, components=None, run_dir: str | Path | None = None,
                 divergence_policy: str = "stop", seed: int = 0):
        super().__init__()
        model_cfg = model_options(model_cfg)
        stable_diffusion = dict(model_cfg.get("stable_diffusion") or {})
        for key in ("path", "tokenizer_path"):  # absolute, so checkpoints load from any working folder
            if stable_diffusion.get(key) and Path(stable_diffusion[key]).exists():
                stable_diffusion[key] = str(Path(stable_diffusion[key]).resolve())
        model_cfg["stable_diffusion"] = stable_diffusion
        optim_cfg = optim_options(optim_cfg)
        self.save_hyperparameters({"model_cfg": model_cfg, "optim_cfg": optim_cfg, "task": task,
                                   "log_images_every": log_images_every})
        if components is None:
            components = components_from_config(model_cfg.get("stable_diffusion") or {})
        self.stable_diffusion_record = dict(components.record)
        self.model = build_segmenter(model_cfg, components)
        initialise_head(self.model.head, str(optim_cfg["head_init"]))  # before the EMA copies the weights
        self.model_cfg, self.optim_cfg, self.task = model_cfg, optim_cfg, task
        self.log_images_every = int(log_images_every)
        self.ema = TrainableEMA(self.model, optim_cfg["ema_decay"]) if optim_cfg["ema"] else None
        self.strict_loading = False  # frozen SD weights are not stored in checkpoints
        self.val_metrics: ThresholdSweepMetrics | None = None
        self._ema_context = None
        self.learning_rate: float | None = None
        self.run_dir = Path(run_dir) if run_dir is not None else None  # where on_train_end exports
        self.init_resilience(seed, divergence_policy)  # seed and divergence guard (common.resilience)
        self.next_sample_number = 0  # first sample number not yet trained on (this rank)
        self._epoch_loss_sum: torch.Tensor | None = None  # summed on device: no host sync per step
        self._epoch_loss_count = 0
        self._epoch_loss_epoch = 0  # the epoch whose losses the sum holds
        self._skip_ema = False
        self.training_plan: TrainingPlan | None = None  # set by ldznet.train; recorded in metrics.json

    def setup(self, stage: str) -> None:
        """Each process gets its own EMA memory: ddp_spawn hands the module to its workers through shared
        memory, and two CPU ranks would otherwise lerp into the same shadow tensors (each update applied twice,
        racily). The parameters are synchronised by DDP; the EMA, updated identically on every rank, is not."""
        if self.ema is not None:
            self.ema.shadow = {name: value.clone() for name, value in self.ema.shadow.items()}

    # --- training ---------------------------------------------------------------------------------------
    def forward(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        return self.model(images, prompts)

    def _loss(self, batch: Mapping) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(batch["image"], list(batch["prompt"]))
        return F.binary_cross_entropy_with_logits(logits.float(), batch["mask"].float()), logits

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        # sample numbers as Python ints (read on the host, never synchronised from the device)
        if isinstance(batch, dict) and isinstance(batch.get("sample_number"), torch.Tensor):
            batch = {**batch, "sample_number": batch["sample_number"].tolist()}
        return batch

    def training_step(self, batch: Mapping, batch_index: int) -> torch.Tensor | None:
        if self._epoch_loss_count and self._epoch_loss_epoch != self.current_epoch:
            # resumed from a checkpoint written on the last batch of an epoch: Lightning starts the next epoch
            # without that epoch's end hooks, so its plateau step happens here, first: before this step's learning
            # rate is logged and used, as in the uninterrupted run (whether or not the batch is then skipped).
            # Not in on_train_epoch_start: moved there, the resumed run diverged from the uninterrupted one
            # (tests/reliability/test_resume_ldznet.py, slow)
            self._step_plateau(self._epoch_loss_mean())
            self._epoch_loss_sum, self._epoch_loss_count = None, 0
        numbers = batch.get("sample_number")
        if numbers:  # EpochStepSampler batches: noise is a function of (seed, sample number), per sample
            # (the global generators are seeded too, for any other random layer a model might have)
            with self.step_noise(numbers[0]), \
                    per_sample_noise(self.model, numbers, seed=self.seed):
                loss, logits = self._loss(batch)
            # the first sample number no rank has drawn yet: rank r of W draws base + r + kW, so after its last
            # one base + (k + 1)W follows (= max + 1 on one process); the same on every rank, so a checkpoint
            # resumes on any number of processes (EpochStepSampler(start=...))
            rank, world = int(self.trainer.global_rank), int(self.trainer.world_size)
            self.next_sample_number = max(self.next_sample_number, max(numbers) - rank + world)
        else:
            loss, logits = self._loss(batch)
        batch_size = batch["image"].shape[0]
        self._skip_ema = not self.guard.check({"bce": loss.detach()}, int(self.global_step))
        self.log_skipped_batches(batch_size)
        if self._skip_ema:
            return None  # Lightning skips backward and the optimiser step
        self.log("train/loss_step", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=batch_size)
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=True, on_epoch=False,
                 batch_size=batch_size)
        self._epoch_loss_epoch = self.current_epoch
        detached = loss.detach().float()
        self._epoch_loss_sum = detached if self._epoch_loss_sum is None else self._epoch_loss_sum + detached
        self._epoch_loss_count += 1
        if self.log_images_every and self.global_step % self.log_images_every == 0:
            self._log_overlays("train/overlays", batch, logits)
        return loss

    def on_train_epoch_end(self) -> None:
        # the plateau scheduler's input; accumulated here (and checkpointed) so a mid-epoch resume sees all of it
        if self._epoch_loss_count:
            mean = self._epoch_loss_mean()
            self.log("train/loss_epoch", mean, on_step=False, on_epoch=True)
            if first_epoch_end_after_resume(self.trainer):
                self._step_plateau(mean)  # Lightning skips plateau schedulers at the first epoch end after a resume
        self._epoch_loss_sum, self._epoch_loss_count = None, 0

    def _epoch_loss_mean(self) -> torch.Tensor:
        """Mean training loss of the epoch so far, averaged over DDP ranks (every rank's plateau scheduler then
        takes the same decision)."""
        mean = (self._epoch_loss_sum / self._epoch_loss_count).to(self.device)
        return self.trainer.strategy.reduce(mean, reduce_op="mean")

    def _step_plateau(self, mean: torch.Tensor) -> None:
        schedulers = self.lr_schedulers()
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step(float(mean))

    def optimizer_step(self, *args, **kwargs) -> None:
        # EMA after each real optimiser step (before Lightning's checkpoint callback sees the step)
        super().optimizer_step(*args, **kwargs)
        if self.ema is not None and not self._skip_ema:
            self.ema.update(self.model)

    # --- validation (EMA weights) -------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self.val_metrics = ThresholdSweepMetrics()
        if self.ema is not None:
            self._ema_context = self.ema.applied(self.model)
            self._ema_context.__enter__()

    def validation_step(self, batch: Mapping, batch_index: int) -> torch.Tensor:
        with per_sample_noise(self.model, [int(index) for index in batch["sample_index"]]):
            loss, logits = self._loss(batch)
        self.log("val/loss", loss, on_epoch=True, prog_bar=True, batch_size=batch["image"].shape[0], sync_dist=True)
        probabilities = torch.sigmoid(logits.float()).cpu()
        for probability, mask in zip(probabilities, batch["mask"].cpu()):
            self.val_metrics.add(probability[0], mask[0])
        if batch_index == 0:
            self._log_overlays("val/overlays", batch, logits)
        return loss

    def on_validation_epoch_end(self) -> None:
        if self._ema_context is not None:
            self._ema_context.__exit__(None, None, None)
            self._ema_context = None
        if self.val_metrics is not None and self.val_metrics.count:
            metrics = self.val_metrics.compute()
            for key in ("miou_best", "fgiou_best", "ap", "miou_0.3", "fgiou_0.3"):
                self.log(f"val/{key}", metrics[key], sync_dist=True)

    def _log_overlays(self, tag: str, batch: Mapping, logits: torch.Tensor) -> None:
        logger = self.logger
        if logger is None or not hasattr(logger, "experiment") or not hasattr(logger.experiment, "add_image"):
            return
        if self.trainer is not None and not self.trainer.is_global_zero:
            return
        panel = overlay_panel(batch["image"], batch["mask"], logits)
        logger.experiment.add_image(tag, panel, self.global_step)
        prompts = " | ".join(list(batch["prompt"])[:4])
        logger.experiment.add_text(tag + "/prompts", prompts, self.global_step)

    # --- optimisation -------------------------------------------------------------------------------------
    def configure_optimizers(self):
        trainer = self._trainer  # None when called outside a Trainer (tests)
        devices = trainer.world_size if trainer is not None else 1
        accumulation = trainer.accumulate_grad_batches if trainer is not None else 1
        self.learning_rate = scaled_learning_rate(self.optim_cfg["base_learning_rate"],
                                                  self.optim_cfg["batch_size"], devices, accumulation)
        log.info("learning rate %.3g = base %.3g x batch %d x devices %d x accumulation %d", self.learning_rate,
                 self.optim_cfg["base_learning_rate"], self.optim_cfg["batch_size"], devices, accumulation)
        if self.ema is not None:  # decay per step at this global batch (see TrainableEMA)
            global_batch = int(self.optim_cfg["batch_size"]) * devices * accumulation
            self.ema.batch_ratio = global_batch / int(self.optim_cfg["reference_global_batch"])
        head = [p for n, p in self.model.named_parameters() if p.requires_grad and n.startswith("head.")]
        rest = [p for n, p in self.model.named_parameters() if p.requires_grad and not n.startswith("head.")]
        groups = [{"params": rest, "lr": self.learning_rate},
                  {"params": head, "lr": self.learning_rate * float(self.optim_cfg["head_learning_rate_scale"])}]
        name = self.optim_cfg["optimizer"]
        # fused kernels where available (common.performance; `performance` is set by apply_performance)
        fused = fused_kwargs(getattr(self, "performance", None), rest + head)
        if name == "adamw":
            optimizer = torch.optim.AdamW(groups, lr=self.learning_rate, weight_decay=self.optim_cfg["weight_decay"],
                                          **fused)
        elif name == "adam":
            optimizer = torch.optim.Adam(groups, lr=self.learning_rate, **fused)
        else:
            raise ValueError(f"optim.optimizer must be 'adamw' or 'adam', got {name!r}")
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=self.optim_cfg["plateau_factor"],
            patience=self.optim_cfg["plateau_patience"])
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "monitor": "train/loss_epoch", "interval": "epoch",
                                 "strict": False}}

    # --- checkpoints --------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Keep only trainable weights (the frozen SD parts come from the SD path) and add EMA + header."""
        trainable = {"model." + name for name, parameter in self.model.named_parameters() if parameter.requires_grad}
        checkpoint["state_dict"] = {key: value for key, value in checkpoint["state_dict"].items() if key in trainable}
        checkpoint["ldznet_segmenter"] = segmenter_header(self.model_cfg, self.task, self.stable_diffusion_record)
        if self.ema is not None:
            checkpoint["ema_state_dict"] = self.ema.state_dict()
        super().on_save_checkpoint(checkpoint)  # train_state() under TRAIN_STATE_KEY (common.resilience)

    def train_state(self) -> dict[str, Any]:
        """What exact resume needs beyond Lightning's own state (plain numbers: weights_only loading). The
        epoch's loss sum is averaged over DDP ranks (every rank calls this while saving; rank 0 writes), so the
        plateau input continues on any number of processes; the global batch and world size let ldznet.train
        check a resume (`check_resume_world`)."""
        loss_sum = 0.0 if self._epoch_loss_sum is None else self._epoch_loss_sum
        trainer = self._trainer
        world = int(trainer.world_size) if trainer is not None else 1
        if world > 1:  # every rank has as many batches, so the mean of the sums is the sum of the rank means
            loss_sum = trainer.strategy.reduce(torch.as_tensor(loss_sum, dtype=torch.float32, device=self.device),
                                               reduce_op="mean")
        plan = self.training_plan
        return {**super().train_state(), "next_sample_number": int(self.next_sample_number),  # + seed, skipped
                "epoch_loss_sum": float(loss_sum), "epoch_loss_count": int(self._epoch_loss_count),
                "epoch_loss_epoch": int(self._epoch_loss_epoch), "world_size": world,
                "global_batch": None if plan is None else int(plan.global_batch),
                "accumulation": int(trainer.accumulate_grad_batches) if trainer is not None else 1}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        trainable = {"model." + name for name, parameter in self.model.named_parameters() if parameter.requires_grad}
        missing = sorted(trainable - set(checkpoint.get("state_dict", {})))
        if missing:  # strict_loading is off for the frozen SD parts; the trainable ones must all be there
            variant = (checkpoint.get("ldznet_segmenter") or {}).get("variant")
            raise ValueError(f"checkpoint (a {variant!r} model) lacks {len(missing)} trainable weights of this "
                             f"{self.model.variant!r} model, e.g. {missing[:3]}")
        if self.ema is not None and checkpoint.get("ema_state_dict"):
            self.ema.load_state_dict(checkpoint["ema_state_dict"])
        super().on_load_checkpoint(checkpoint)  # load_train_state (common.resilience)

    def load_train_state(self, state: Mapping[str, Any]) -> None:
        super().load_train_state(state)  # skipped batches
        self.next_sample_number = int(state["next_sample_number"])
        self._epoch_loss_count = int(state["epoch_loss_count"])
        self._epoch_loss_epoch = int(state.get("epoch_loss_epoch", 0))
        self._epoch_loss_sum = torch.tensor(float(state["epoch_loss_sum"])) if self._epoch_loss_count else None

    def on_train_end(self) -> None:
        """Export inside the training process(es), so spawned DDP workers export their own EMA: a final
        `last.ckpt` (atomic rename), `segmenter.pt` and the training summary in `metrics.json`."""
        if self.run_dir is None:
            return
        trainer = self.trainer
        temporary = self.run_dir / "checkpoints" / ".last.ckpt.tmp"
        trainer.save_checkpoint(temporary)  # every rank calls it; rank 0 writes
        if not trainer.is_global_zero:
            return
        os.replace(temporary, self.run_dir / "checkpoints" / "last.ckpt")
        plan = self.training_plan.as_dict() if self.training_plan is not None else None
        save_segmenter(self.model, self.run_dir / "segmenter.pt", self.model_cfg, task=self.task,
                       ema_state_dict=self.ema_state_dict(), stable_diffusion_record=self.stable_diffusion_record,
                       extra={"global_step": int(trainer.global_step), "learning_rate": self.learning_rate,
                              "training_plan": plan})
        validation = {key: float(value) for key, value in trainer.callback_metrics.items() if key.startswith("val/")}
        write_metrics(self.run_dir, {
            "variant": self.model.variant, "task": self.task, "global_step": int(trainer.global_step),
            "learning_rate": self.learning_rate, "training_plan": plan, "validation": validation,
            "skipped_batches": int(self.guard.skipped_steps),
            "segmenter": str(self.run_dir / "segmenter.pt"), "stable_diffusion": self.stable_diffusion_record,
        })

    def ema_state_dict(self) -> dict[str, torch.Tensor] | None:
        return None if self.ema is None else {name: value.cpu() for name, value in self.ema.shadow.items()}
