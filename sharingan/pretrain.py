"""The two SharinGAN pretraining stages (dissertation §2.3.1.2; docs/ref-sharingan.md §5.1).

Stage 1, `GeneratorPretraining`: G as a plain autoencoder on both domains, L_r = MSE(G(x_s), x_s) +
MSE(G(x_r), x_r) (eq. 2.4); it starts the end-to-end stage near the identity mapping.
Stage 2, `TaskPretraining`: T supervised on synthetic data only (the task's `pretrain` loss; for depth the
official "PTNet": L1 of the full-resolution output). Its networks checkpoint is also the "all synthetic"
baseline of Table 2.1.
Optimisers: `optim.pretrain_generator` / `optim.pretrain_task` (official: Adam 5e-5 (0.5, 0.9) and
1e-4 (0.95, 0.999)).
Both stages resume exactly and guard against divergence like the end-to-end stage, through the same
`common.resilience.IterationResume` (`PretrainingModule`: the data position, skipped-batch count, seed and world
size go into the Lightning checkpoint; a non-finite loss stops the run or, with `divergence_policy=skip`, skips
the batch, which still counts as an iteration).
"""

from __future__ import annotations

from collections.abc import Mapping

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

from common.performance import fused_kwargs
from common.resilience import IterationResume
from sharingan.checkpoints import TRAIN_STATE_KEY
from sharingan.losses import reconstruction_loss
from sharingan.tasks import load_task


def _adam(parameters, node: DictConfig, performance: Mapping | None = None) -> torch.optim.Adam:
    """Adam of a pretraining stage; `performance` (the module's, set by common.performance.apply_performance)
    decides the fused kernel, as for the end-to-end stage's optimisers."""
    parameters = list(parameters)
    return torch.optim.Adam(parameters, lr=float(node.lr), betas=tuple(float(b) for b in node.betas),
                            weight_decay=float(node.get("weight_decay", 0.0)), **fused_kwargs(performance, parameters))


class PretrainingModule(IterationResume, pl.LightningModule):
    """What both pretraining stages share: divergence guard, per-iteration seeded noise, resume state
    (common.resilience.IterationResume, as the end-to-end stage).

    Subclasses implement `loss(batch, batch_index) -> (loss, {name: value to log})`."""

    TRAIN_STATE_KEY = TRAIN_STATE_KEY

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__()
        self.cfg = cfg
        # seed, divergence guard, data position `iteration` (loader batches consumed, skipped ones included)
        self.init_resilience(int(cfg.get("seed") or 0), str(cfg.get("divergence_policy") or "stop"))

    def loss(self, batch: Mapping, batch_index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def training_step(self, batch: Mapping, batch_index: int) -> torch.Tensor | None:
        with self.iteration_noise():
            loss, logged = self.loss(batch, batch_index)
        iteration, self.iteration = self.iteration, self.iteration + 1
        finite = self.guard.check({"loss": loss.detach()}, int(self.global_step), f"iteration {iteration}")
        self.log_skipped_batches()
        if not finite:
            # Lightning skips backward and the update; the batch still counts as a global step (as in the
            # end-to-end stage), so iterations and global steps stay equal
            return None
        size = next(iter(batch.values()))["image"].shape[0]
        for name, value in logged.items():
            self.log(name, value, prog_bar=name == self.PROGRESS, batch_size=size)
        return loss

    PROGRESS = ""


class GeneratorPretraining(PretrainingModule):
    """Stage 1: G reconstructs images of both domains."""

    stage = "pretrain_generator"
    PROGRESS = "train/pretrain/reconstruction"

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__(cfg)
        self.task = load_task(str(cfg.task))
        self.generator = self.task.build_networks(cfg)["generator"]
        self.image_every = int(cfg.logging.get("image_every", 0) or 0)

    def networks(self) -> dict:
        return {"generator": self.generator}

    def loss(self, batch: Mapping, batch_index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        synthetic, real = batch["synthetic"]["image"], batch["real"]["image"]
        shared_synthetic, shared_real = self.generator(synthetic), self.generator(real)
        loss_synthetic = reconstruction_loss(shared_synthetic, synthetic)
        loss_real = reconstruction_loss(shared_real, real)
        loss = loss_synthetic + loss_real
        if self.image_every and batch_index % self.image_every == 0:
            self._log_images({"synthetic": (synthetic, shared_synthetic), "real": (real, shared_real)})
        return loss, {"train/pretrain/reconstruction_synthetic": loss_synthetic,
                      "train/pretrain/reconstruction_real": loss_real, "train/pretrain/reconstruction": loss}

    def _log_images(self, pairs: Mapping) -> None:
        experiment = getattr(self.logger, "experiment", None)
        if experiment is None or not hasattr(experiment, "add_images"):
            return
        for domain, (image, shared) in pairs.items():
            x, g = self.task.to_display(image[:4]), self.task.to_display(shared[:4])
            experiment.add_images(f"images/{domain}/x", x, self.global_step)
            experiment.add_images(f"images/{domain}/G(x)", g, self.global_step)
            experiment.add_images(f"images/{domain}/abs_x_minus_G(x)", (x - g).abs(), self.global_step)

    def configure_optimizers(self):
        return _adam(self.generator.parameters(), self.cfg.optim.pretrain_generator,
                     getattr(self, "performance", None))


class TaskPretraining(PretrainingModule):
    """Stage 2: T supervised on synthetic data only (raw images, no generator)."""

    stage = "pretrain_task"
    PROGRESS = "train/pretrain/task_total"

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__(cfg)
        self.task = load_task(str(cfg.task))
        self.task_network = self.task.build_networks(cfg)["task_network"]
        self.task_loss = self.task.build_task_loss(cfg)
        self.image_every = int(cfg.logging.get("image_every", 0) or 0)

    def networks(self) -> dict:
        return {"task_network": self.task_network}

    def loss(self, batch: Mapping, batch_index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        synthetic = batch["synthetic"]
        predictions = self.task_network(synthetic["image"])
        loss, terms = self.task_loss.pretrain(predictions, synthetic)
        logged = {f"train/{name}": value for name, value in terms.items()}
        logged["train/pretrain/task_total"] = loss
        experiment = getattr(self.logger, "experiment", None)
        if self.image_every and batch_index % self.image_every == 0 and hasattr(experiment, "add_images"):
            sub_batch = {k: v[:4] if isinstance(v, torch.Tensor) else v for k, v in synthetic.items()}
            experiment.add_images("images/synthetic/x", self.task.to_display(sub_batch["image"]), self.global_step)
            with torch.no_grad():
                shown = self.task_network(sub_batch["image"])
            for name, panel in self.task.prediction_panels(shown, sub_batch, "synthetic").items():
                experiment.add_images(f"images/synthetic/{name}", panel, self.global_step)
        return loss, logged

    def configure_optimizers(self):
        return _adam(self.task_network.parameters(), self.cfg.optim.pretrain_task,
                     getattr(self, "performance", None))
