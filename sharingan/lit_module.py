"""SharinGAN end-to-end training (dissertation §2.2, eq. 2.10; official schedule in docs/ref-sharingan.md §5).

One LightningModule for every task (the task's networks, data and L_T come from `sharingan.tasks.<task>`).
Manual optimisation, three optimisers. One training iteration =
    `steps.critic` critic updates on the same pair G(x_s), G(x_r) (computed once, no gradient to G),
    `steps.generator` generator updates with α1 L_adv + α2 L_r + α3 L_T (critic and T frozen; gradients flow
    through T into G),
    `steps.task` task-network updates with L_T on G's outputs (G frozen).
Depth uses 5/1/1 on one batch; faces use 5/3/1 with a fresh batch for every G and T step
(`fresh_batch_per_step: true`: the loader then yields one batch of `chunks x batch size` that is split).
Switches: `use_sharingan: false` trains T alone on the raw images with L_T (the "no SharinGAN" ablation of
Tables 2.5/2.6); `use_reconstruction: false` drops L_r (second row of those tables).

Lightning counts every optimiser step as a global step, so one iteration is
`sharingan.schedule.optimizer_steps_per_iteration(cfg)` global steps; `sharingan.train` converts iterations
accordingly.

Reliability (docs/RELIABILITY.md "Resume and divergence (SharinGAN)"; common.resilience.IterationResume): the
iteration count (the data position), skipped-batch count, seed and world size go into every Lightning checkpoint
(`sharingan_train_state`); the step's noise is drawn from generators seeded by (seed, iteration).
`divergence_policy` (common.resilience.DivergenceGuard): `stop` checks every loss of the iteration with one
isfinite at its end and raises naming step and term before anything is logged or checkpointed; `skip` checks
each loss before its optimiser step and skips the rest of the batch, which still counts as an iteration.

Several devices (DDP through Lightning; README "Several GPUs and nodes"): every optimiser step
is one `manual_backward` whose gradients DDP averages over the ranks exactly once (Lightning re-prepares DDP's
reducer for each of the iteration's backward passes; `find_unused_parameters` leaves the frozen and unused
networks' gradients alone). Rank r of W reads its own samples (`ShardedStepSampler`) and draws its step noise from
(seed, iteration x W + r) (W = 1: the single-device stream). Batch norm keeps per-rank statistics (no
SyncBatchNorm: `trainer.sync_batchnorm` is refused for this stage); DDP broadcasts rank 0's running statistics at
the start of every iteration. One iteration on W ranks with per-rank batches b_r is therefore exactly one
single-process iteration that computes each optimiser step's gradient on every b_r separately (with that rank's
noise and batch statistics) and averages them (tests/reliability/test_ddp_sharingan.py). The divergence guard's
verdict is all-reduced, so all ranks stop (or skip the batch) together.

This file holds the module only: the step schedule read from the config is `sharingan.schedule`, networks
checkpoints (and the `ExportNetworks` callback that writes them) are `sharingan.checkpoints`, and the seed /
divergence guard / resume state are `common.resilience.IterationResume`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from common.performance import fused_kwargs
from common.resilience import IterationResume
from common.trainer import count_optimizer_steps_as_done
from sharingan.checkpoints import TRAIN_STATE_KEY
from sharingan.losses import SharinGANWeights, critic_loss, generator_adversarial_loss, reconstruction_loss
from sharingan.schedule import adam_settings, batch_chunks, optimizer_steps_per_iteration, split_batch, step_counts
from sharingan.tasks import load_task


@contextlib.contextmanager
def frozen(*modules: nn.Module | None) -> Iterator[None]:
    """Temporarily stop parameter gradients (inputs still receive gradients through the module)."""
    params = [p for module in modules if module is not None for p in module.parameters()]
    states = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, state in zip(params, states):
            p.requires_grad_(state)


# ----------------------------------------------------------------------------------------------------------
# The end-to-end module
# ----------------------------------------------------------------------------------------------------------


class SharinGANModule(IterationResume, pl.LightningModule):
    """G, D and T trained end to end with eq. 2.10 (or T alone when `use_sharingan` is false)."""

    TRAIN_STATE_KEY = TRAIN_STATE_KEY  # the resume state (common.resilience.IterationResume) in Lightning checkpoints

    def __init__(self, cfg: DictConfig, networks: Mapping[str, nn.Module] | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.task = load_task(str(cfg.task))
        self.automatic_optimization = False
        self.use_sharingan = bool(cfg.sharingan.use_sharingan)
        self.use_reconstruction = bool(cfg.sharingan.use_reconstruction)
        self.critic_steps, self.generator_steps, self.task_steps = step_counts(cfg)
        self.chunks = batch_chunks(cfg)
        weights = cfg.sharingan.weights
        self.weights = SharinGANWeights(adversarial=float(weights.adversarial),
                                        reconstruction=float(weights.reconstruction), task=float(weights.task),
                                        gradient_penalty=float(weights.gradient_penalty))
        networks = networks if networks is not None else self.task.build_networks(cfg)
        self.task_network = networks["task_network"]
        self.generator = networks["generator"] if self.use_sharingan else None
        self.critic = networks["critic"] if self.use_sharingan else None
        self.task_loss = self.task.build_task_loss(cfg)
        self.image_every = int(cfg.logging.get("image_every", 0) or 0)
        # seed, divergence guard, data position `iteration` (loader batches consumed, skipped ones included)
        self.init_resilience(int(cfg.get("seed") or 0), str(cfg.get("divergence_policy") or "stop"))
        self._steps_taken = 0

    # -- helpers ---------------------------------------------------------------------------------------
    def networks(self) -> dict[str, nn.Module | None]:
        return {"generator": self.generator, "critic": self.critic, "task_network": self.task_network}

    def shared(self, image: Tensor) -> Tensor:
        """The shared-domain image G(x) (the raw image when SharinGAN is switched off)."""
        return self.generator(image) if self.generator is not None else image

    def task_objective(self, shared_synthetic: Tensor, shared_real: Tensor, batch: Mapping
                       ) -> tuple[Tensor, dict[str, Tensor], Any, Any]:
        """L_T on both domains (eq. 2.8 / 2.9) from the shared images."""
        predictions_synthetic = self.task_network(shared_synthetic)
        predictions_real = self.task_network(shared_real)
        loss_synthetic, terms = self.task_loss.synthetic(predictions_synthetic, batch["synthetic"])
        loss_real, terms_real = self.task_loss.real(predictions_real, batch["real"])
        terms = {**terms, **terms_real}
        return loss_synthetic + loss_real, terms, predictions_synthetic, predictions_real

    def _log_terms(self, terms: Mapping[str, Tensor], batch_size: int) -> None:
        for name, value in terms.items():
            self.log(f"train/{name}", value, prog_bar=name.endswith("/total"), batch_size=batch_size)

    # -- Lightning hooks -------------------------------------------------------------------------------
    def configure_optimizers(self):
        # fused Adam kernels where available (common.performance; `performance` is set by apply_performance)
        def adam(network: nn.Module, name: str) -> torch.optim.Adam:
            parameters = list(network.parameters())
            return torch.optim.Adam(parameters, **adam_settings(self.cfg, name),
                                    **fused_kwargs(getattr(self, "performance", None), parameters))

        task = adam(self.task_network, "task_network")
        if not self.use_sharingan:
            return [task]
        return [adam(self.critic, "critic"), adam(self.generator, "generator"), task]

    def _optimise(self, optimizer, loss: Tensor, label: str, terms: Mapping[str, Tensor],
                  pending: dict[str, Tensor]) -> bool:
        """One optimiser step on `loss`, guarded. `stop`: the step's terms join `pending`, checked once at the
        end of the iteration (before logging and before any checkpoint). `skip`: checked here, before the
        update; False (nothing applied) when a term is not finite (on any rank under DDP)."""
        named = {f"{label}/{name.split('/')[-1]}": value for name, value in terms.items()}
        named[f"{label}/loss"] = loss.detach()  # the value optimised (its parts may all be finite)
        if self.guard.policy == "skip":
            named = self.agreed_terms(named)
            if not self.guard.check(named, int(self.global_step) - self._steps_taken, f"iteration {self.iteration}"):
                return False
        else:
            pending.update(named)
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()
        return True

    def _skip_rest_of_iteration(self, steps_taken: int) -> None:
        """Count the optimiser steps the skipped batch did not take as done, so that one iteration stays
        `optimizer_steps_per_iteration` global steps (max_steps, checkpoint_every and resume stay aligned)."""
        count_optimizer_steps_as_done(self.trainer, optimizer_steps_per_iteration(self.cfg) - steps_taken)

    def training_step(self, batch: Mapping, batch_index: int) -> None:
        # the step's own noise (WGAN-GP interpolation) is a function of (seed, iteration, rank): exact on resume,
        # independent across DDP ranks, and the single-device stream when there is one rank
        with self.iteration_noise():
            completed = self._training_iteration(batch)
        self.log_skipped_batches()
        if not completed:
            self._skip_rest_of_iteration(self._steps_taken)
        self.iteration += 1

    def _training_iteration(self, batch: Mapping) -> bool:
        """One SharinGAN iteration; False when a non-finite loss made it skip the batch (policy skip)."""
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        chunks = split_batch(batch, self.chunks)
        terms: dict[str, Tensor] = {}
        pending: dict[str, Tensor] = {}
        panels_batch = chunks[0]
        self._steps_taken = 0

        if self.use_sharingan:
            critic_optimizer, generator_optimizer, task_optimizer = optimizers
            # 1. critic steps on one fixed pair of shared images
            first = chunks[0]
            with torch.no_grad():
                shared_synthetic = self.generator(first["synthetic"]["image"])
                shared_real = self.generator(first["real"]["image"])
            for index in range(self.critic_steps):
                loss, critic_terms = critic_loss(self.critic, shared_synthetic, shared_real,
                                                 self.weights.gradient_penalty)
                if not self._optimise(critic_optimizer, loss, f"critic[{index}]", critic_terms, pending):
                    return False
                self._steps_taken += 1
                terms.update(critic_terms)
            # 2. generator steps: α1 L_adv + α2 L_r + α3 L_T, critic and T frozen
            for index in range(self.generator_steps):
                part = chunks[min(1 + index, len(chunks) - 1)]
                x_synthetic, x_real = part["synthetic"]["image"], part["real"]["image"]
                step_terms: dict[str, Tensor] = {}
                with frozen(self.critic, self.task_network):
                    shared_synthetic = self.generator(x_synthetic)
                    shared_real = self.generator(x_real)
                    adversarial = generator_adversarial_loss(self.critic, shared_synthetic, shared_real)
                    task_value, task_terms, _, _ = self.task_objective(shared_synthetic, shared_real, part)
                    loss = self.weights.adversarial * adversarial + self.weights.task * task_value
                    step_terms["generator/adversarial"] = adversarial.detach()
                    if self.use_reconstruction:
                        reconstruction = (reconstruction_loss(shared_synthetic, x_synthetic)
                                          + reconstruction_loss(shared_real, x_real))
                        loss = loss + self.weights.reconstruction * reconstruction
                        step_terms["generator/reconstruction"] = reconstruction.detach()
                    if not self._optimise(generator_optimizer, loss, f"generator[{index}]", step_terms, pending):
                        return False
                    step_terms["generator/total"] = loss.detach()
                self._steps_taken += 1
                terms.update(step_terms)
        else:
            (task_optimizer,) = optimizers

        # 3. task-network steps on the shared images (G frozen)
        for index in range(self.task_steps):
            part = chunks[-1 - (self.task_steps - 1 - index)] if self.chunks > 1 else chunks[0]
            with torch.no_grad():
                shared_synthetic = self.shared(part["synthetic"]["image"])
                shared_real = self.shared(part["real"]["image"])
            task_value, task_terms, predictions_synthetic, predictions_real = self.task_objective(
                shared_synthetic, shared_real, part)
            if not self._optimise(task_optimizer, task_value, f"task[{index}]", {}, pending):
                return False
            self._steps_taken += 1
            terms.update(task_terms)
            terms["task/total"] = task_value.detach()

        # policy stop: one isfinite over every loss of the iteration (all-reduced under DDP); raises before
        # logging / checkpointing
        pending = self.agreed_terms(pending) if self.guard.policy == "stop" else pending
        self.guard.check(pending, int(self.global_step) - self._steps_taken, f"iteration {self.iteration}")
        self._log_terms(terms, int(chunks[0]["synthetic"]["image"].shape[0]))
        if self.image_every and self.iteration % self.image_every == 0:
            self.log_images(panels_batch)
        return True

    def log_images(self, batch: Mapping) -> None:
        """Fig 2.4 panels (x, G(x), |x - G(x)| per domain) and the task's prediction panels."""
        logger = self.logger
        if logger is None or not hasattr(logger, "experiment") or not hasattr(logger.experiment, "add_images"):
            return
        was_training = self.training
        self.eval()
        with torch.no_grad():
            for domain in ("synthetic", "real"):
                image = batch[domain]["image"][:4]
                shared = self.shared(image)
                display, display_shared = self.task.to_display(image), self.task.to_display(shared)
                difference = (display - display_shared).abs()
                step = self.global_step
                logger.experiment.add_images(f"images/{domain}/x", display, step)
                logger.experiment.add_images(f"images/{domain}/G(x)", display_shared, step)
                logger.experiment.add_images(f"images/{domain}/abs_x_minus_G(x)", difference, step)
                predictions = self.task_network(shared)
                sub_batch = {key: value[:4] if isinstance(value, Tensor) else value
                             for key, value in batch[domain].items()}
                for name, panel in self.task.prediction_panels(predictions, sub_batch, domain).items():
                    logger.experiment.add_images(f"images/{domain}/{name}", panel, step)
        self.train(was_training)

    def validation_step(self, batch: Mapping, batch_index: int) -> None:
        metrics = self.task.validation_metrics(self.generator, self.task_network, batch)
        size = int(batch["image"].shape[0]) if isinstance(batch, Mapping) and "image" in batch else 1
        for name, value in metrics.items():
            self.log(f"val/{name}", float(value), batch_size=size, prog_bar=name == self.task.PROGRESS_BAR_METRIC,
                     sync_dist=True)
        experiment = getattr(self.logger, "experiment", None) if self.logger is not None else None
        if batch_index == 0 and hasattr(self.task, "validation_panels") and hasattr(experiment, "add_images"):
            with torch.no_grad():
                panels = self.task.validation_panels(self.generator, self.task_network, batch)
            for name, panel in panels.items():
                experiment.add_images(f"val_images/{name}", panel, self.global_step)
