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
`optimizer_steps_per_iteration(cfg)` global steps; `sharingan.train` converts iterations accordingly.

Reliability (docs/RELIABILITY.md "Resume and divergence (SharinGAN)"): the iteration count (the data
position), skipped-batch count and seed go into every Lightning checkpoint (`sharingan_train_state`); the
step's noise is drawn from generators seeded by (seed, iteration). `divergence_policy` (common.resilience.
DivergenceGuard): `stop` checks every loss of the iteration with one isfinite at its end and raises naming
step and term before anything is logged or checkpointed; `skip` checks each loss before its optimiser step
and skips the rest of the batch, which still counts as an iteration.

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

Networks checkpoints (`save_networks` / `load_networks`): a plain dict of state dicts plus the task name,
input size, stage and resolved config, read back with `weights_only=True`; eval and predict rebuild the
networks from the stored config and refuse a checkpoint of another task.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from common.checkpoints import load_torch, save_torch
from common.performance import fused_kwargs
from common.resilience import DivergenceGuard, sample_seed, seeded_generators
from common.trainer import count_optimizer_steps_as_done
from sharingan.losses import SharinGANWeights, critic_loss, generator_adversarial_loss, reconstruction_loss
from sharingan.tasks import load_task

CHECKPOINT_FORMAT = "sharingan-networks/1"
TRAIN_STATE_KEY = "sharingan_train_state"  # in Lightning checkpoints: data position, skipped batches, seed


def nan_injection(cfg: DictConfig) -> tuple[int, str] | None:
    """(iteration, phase) from the test switch `debug.nan_at`, or None."""
    node = OmegaConf.select(cfg, "debug.nan_at", default=None)
    if not node:
        return None
    return int(node["iteration"]), str(node.get("phase", "task"))


# ----------------------------------------------------------------------------------------------------------
# Configuration helpers
# ----------------------------------------------------------------------------------------------------------


def adam_settings(cfg: DictConfig, network: str) -> dict[str, Any]:
    """Adam lr/betas for `network` ("generator", "critic", "task_network") in the end-to-end stage.

    `optim.values` picks `effective` (what the official code really ran with: G 5e-5 (0.5, 0.9), T 1e-4
    (0.95, 0.999), D 1e-5 (0.9, 0.999), because loading the pretrained optimiser states restores their
    param groups) or `nominal` (the 1e-5 everywhere written in the code and §2.3.1.2).
    """
    choice = str(cfg.optim.get("values", "effective"))
    if choice not in ("effective", "nominal"):
        raise ValueError(f"config key optim.values must be 'effective' or 'nominal', got {choice!r}")
    node = cfg.optim[choice][network]
    return {"lr": float(node.lr), "betas": tuple(float(b) for b in node.betas),
            "weight_decay": float(node.get("weight_decay", 0.0))}


def step_counts(cfg: DictConfig) -> tuple[int, int, int]:
    steps = cfg.sharingan.steps
    counts = int(steps.critic), int(steps.generator), int(steps.task)
    if min(counts) < 0 or counts[2] < 1:
        raise ValueError(f"sharingan.steps must be non-negative with at least one task step, got {counts}")
    return counts


def optimizer_steps_per_iteration(cfg: DictConfig) -> int:
    critic, generator, task = step_counts(cfg)
    return critic + generator + task if cfg.sharingan.use_sharingan else task


def batch_chunks(cfg: DictConfig) -> int:
    """How many equal chunks one loader batch holds: 1, or 1 + G steps + T steps for fresh batches."""
    if not cfg.sharingan.get("fresh_batch_per_step", False) or not cfg.sharingan.use_sharingan:
        return 1
    _, generator, task = step_counts(cfg)
    return 1 + generator + task


def split_batch(batch: Any, chunks: int) -> list[Any]:
    """Split every tensor of a (nested) batch into `chunks` equal parts along dimension 0."""
    if chunks == 1:
        return [batch]
    if isinstance(batch, Tensor):
        if batch.shape[0] % chunks:
            raise ValueError(f"batch of {batch.shape[0]} cannot be split into {chunks} equal chunks "
                             "(set the loader batch size to chunks x per-step batch size)")
        return list(batch.chunk(chunks))
    if isinstance(batch, Mapping):
        parts = {key: split_batch(value, chunks) for key, value in batch.items()}
        return [{key: value[index] for key, value in parts.items()} for index in range(chunks)]
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], str):
        size = len(batch) // chunks
        return [list(batch[index * size:(index + 1) * size]) for index in range(chunks)]
    return [batch] * chunks


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
# Networks checkpoints
# ----------------------------------------------------------------------------------------------------------


def save_networks(path: str | Path, cfg: DictConfig, networks: Mapping[str, nn.Module | None], stage: str,
                  step: int = 0, extra: Mapping[str, Any] | None = None) -> Path:
    """Write the networks' weights with everything needed to rebuild them (atomic, weights-only loadable)."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "task": str(cfg.task),
        "stage": stage,
        "step": int(step),
        "input_size": [int(v) for v in cfg.data.size],
        "use_sharingan": bool(networks.get("generator") is not None),
        "config": OmegaConf.to_yaml(cfg, resolve=True),
        "networks": {name: module.state_dict() for name, module in networks.items() if module is not None},
        "extra": dict(extra or {}),
    }
    save_torch(payload, path)
    return Path(path)


def read_networks_checkpoint(path: str | Path, task: str | None = None) -> dict[str, Any]:
    payload = load_torch(path)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a SharinGAN networks checkpoint (expected format {CHECKPOINT_FORMAT!r}; "
                         "Lightning .ckpt files are exported to checkpoints/networks_*.pt by training)")
    if task is not None and payload["task"] != task:
        raise ValueError(f"checkpoint {path} is for task {payload['task']!r}, not {task!r}")
    return payload


def load_networks(path: str | Path, task: str | None = None, overrides: tuple[str, ...] | list[str] = ()
                  ) -> tuple[dict[str, nn.Module | None], DictConfig, dict[str, Any]]:
    """Rebuild the networks of a checkpoint from its stored config and load their weights.

    Returns ({"generator": G or None, "critic": D or None, "task_network": T}, config, payload). `overrides`
    (`key=value`) are applied to the stored config (e.g. data roots for evaluation).
    """
    from common.config import apply_overrides

    payload = read_networks_checkpoint(path, task)
    cfg = apply_overrides(OmegaConf.create(payload["config"]), overrides)
    module = load_task(payload["task"])
    built = module.build_networks(cfg)
    networks: dict[str, nn.Module | None] = {}
    for name in ("generator", "critic", "task_network"):
        state = payload["networks"].get(name)
        if state is None:
            networks[name] = None
            continue
        try:
            built[name].load_state_dict(state)
        except RuntimeError as error:
            raise ValueError(f"checkpoint {path}: weights of {name} do not fit the network built from its "
                             f"stored config: {error}") from error
        networks[name] = built[name].eval()
    if networks["task_network"] is None:
        raise ValueError(f"checkpoint {path} holds no task_network weights")
    return networks, cfg, payload


def load_pretrained(module: nn.Module, path: str | Path, name: str, task: str) -> None:
    """Initialise one network from a networks checkpoint of an earlier stage (pretrain G / pretrain T)."""
    payload = read_networks_checkpoint(path, task)
    if name not in payload["networks"]:
        raise ValueError(f"checkpoint {path} has no {name} weights (it holds {sorted(payload['networks'])})")
    try:
        module.load_state_dict(payload["networks"][name])
    except RuntimeError as error:
        raise ValueError(f"checkpoint {path}: {name} weights do not fit this config's network: {error}") from error


# ----------------------------------------------------------------------------------------------------------
# The end-to-end module
# ----------------------------------------------------------------------------------------------------------


class SharinGANModule(pl.LightningModule):
    """G, D and T trained end to end with eq. 2.10 (or T alone when `use_sharingan` is false)."""

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
        self.iteration = 0  # loader batches consumed (skipped ones included): the data position on resume
        self.seed = int(cfg.get("seed") or 0)
        self.guard = DivergenceGuard(str(cfg.get("divergence_policy") or "stop"))
        self._steps_taken = 0
        self.nan_at = nan_injection(cfg)

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

    def _rank_and_world(self) -> tuple[int, int]:
        trainer = self._trainer
        if trainer is None:
            return 0, 1
        return int(trainer.global_rank), int(trainer.world_size)

    def _synchronised(self, named: dict[str, Tensor]) -> dict[str, Tensor]:
        """Under DDP, add a NaN term `another_rank/non_finite` when some other rank saw a non-finite loss, so that
        the guard's verdict (stop or skip) is the same on every rank: a lone rank that stops or skips would leave
        the others waiting in the next gradient all-reduce."""
        _, world = self._rank_and_world()
        if world == 1 or not named or not torch.distributed.is_initialized():
            return named
        values = torch.stack([torch.as_tensor(value).detach().float().sum().to(self.device)
                              for value in named.values()])
        finite = torch.isfinite(values).all().float().reshape(1)
        everywhere = finite.clone()
        torch.distributed.all_reduce(everywhere, op=torch.distributed.ReduceOp.MIN)
        if bool(everywhere.item() < 1) and bool(finite.item() == 1):
            named = {**named, "another_rank/non_finite": torch.tensor(float("nan"), device=self.device)}
        return named

    def _optimise(self, optimizer, loss: Tensor, label: str, terms: Mapping[str, Tensor],
                  pending: dict[str, Tensor]) -> bool:
        """One optimiser step on `loss`, guarded. `stop`: the step's terms join `pending`, checked once at the
        end of the iteration (before logging and before any checkpoint). `skip`: checked here, before the
        update; False (nothing applied) when a term is not finite (on any rank under DDP)."""
        named = {f"{label}/{name.split('/')[-1]}": value for name, value in terms.items()}
        named[f"{label}/loss"] = loss.detach()  # the value optimised (its parts may all be finite)
        if self.guard.policy == "skip":
            named = self._synchronised(named)
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
        rank, world = self._rank_and_world()
        with seeded_generators(sample_seed(self.seed, self.iteration * world + rank, stream=1), self.device):
            completed = self._training_iteration(batch)
        if self.guard.policy == "skip":
            self.log("train/skipped_batches", float(self.guard.skipped_steps), batch_size=1)
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
                loss = self.inject_nan("critic", loss)
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
                    loss = self.inject_nan("generator", loss)
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
            task_value = self.inject_nan("task", task_value)
            if not self._optimise(task_optimizer, task_value, f"task[{index}]", {}, pending):
                return False
            self._steps_taken += 1
            terms.update(task_terms)
            terms["task/total"] = task_value.detach()

        # policy stop: one isfinite over every loss of the iteration (all-reduced under DDP); raises before
        # logging / checkpointing
        pending = self._synchronised(pending) if self.guard.policy == "stop" else pending
        self.guard.check(pending, int(self.global_step) - self._steps_taken, f"iteration {self.iteration}")
        self._log_terms(terms, int(chunks[0]["synthetic"]["image"].shape[0]))
        if self.image_every and self.iteration % self.image_every == 0:
            self.log_images(panels_batch)
        return True

    def inject_nan(self, phase: str, loss: Tensor) -> Tensor:
        """Test hook: `debug.nan_at: {iteration: I, phase: critic|generator|task}` makes that loss NaN."""
        target = self.nan_at
        if target is not None and target[0] == self.iteration and target[1] == phase:
            return loss * float("nan")
        return loss

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[TRAIN_STATE_KEY] = self.train_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get(TRAIN_STATE_KEY)
        if state is not None:
            saved_world, world = int(state.get("world_size", 1)), self._rank_and_world()[1]
            if saved_world != world:  # each rank's data stream is seeded by (iteration, rank, world size)
                raise ValueError(f"cannot resume: the checkpoint was written by {saved_world} process(es) "
                                 f"(devices x nodes), this run has {world}; the per-rank data streams would not "
                                 "continue. Resume with the same trainer.devices and trainer.num_nodes")
            self.iteration = int(state["iterations"])
            self.guard.skipped_steps = int(state["skipped_batches"])

    def train_state(self) -> dict[str, int]:
        """What exact resume needs beyond Lightning's own state (plain numbers: weights_only loading)."""
        return {"iterations": int(self.iteration), "skipped_batches": int(self.guard.skipped_steps),
                "seed": int(self.seed), "world_size": self._rank_and_world()[1]}

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
            self.log(f"val/{name}", float(value), batch_size=size, prog_bar=name == "a1", sync_dist=True)
        experiment = getattr(self.logger, "experiment", None) if self.logger is not None else None
        if batch_index == 0 and hasattr(self.task, "validation_panels") and hasattr(experiment, "add_images"):
            with torch.no_grad():
                panels = self.task.validation_panels(self.generator, self.task_network, batch)
            for name, panel in panels.items():
                experiment.add_images(f"val_images/{name}", panel, self.global_step)


class ExportNetworks(pl.Callback):
    """Writes `networks_last.pt` at the end of training and `networks_best.pt` when the monitored
    validation metric improves (the official code selects the best KITTI-val checkpoint)."""

    def __init__(self, directory: str | Path, cfg: DictConfig, stage: str,
                 monitor: tuple[str, str] | None = None) -> None:
        self.directory, self.cfg, self.stage, self.monitor = Path(directory), cfg, stage, monitor
        self.best: float | None = None

    def _networks(self, module: pl.LightningModule) -> dict[str, nn.Module | None]:
        return module.networks()

    def setup(self, trainer: pl.Trainer, module: pl.LightningModule, stage: str) -> None:
        # one run folder, rank 0's: other ranks (torchrun, SLURM) learn its name here and write nothing
        self.directory = Path(trainer.strategy.broadcast(str(self.directory)))

    def state_dict(self) -> dict[str, Any]:  # the best value so far survives a resume
        return {"best": self.best}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = state_dict.get("best")

    def on_validation_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if self.monitor is None or trainer.sanity_checking or not trainer.is_global_zero:
            return
        name, mode = self.monitor
        value = trainer.callback_metrics.get(name)
        if value is None:
            return
        value = float(value)
        if self.best is None or (value > self.best if mode == "max" else value < self.best):
            self.best = value
            save_networks(self.directory / "networks_best.pt", self.cfg, self._networks(module), self.stage,
                          trainer.global_step, {"monitor": name, "value": value})

    def on_train_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:  # DDP: every rank holds the same weights; rank 0 writes them
            return
        save_networks(self.directory / "networks_last.pt", self.cfg, self._networks(module), self.stage,
                      trainer.global_step)
