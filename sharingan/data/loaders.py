"""Training loaders that resume exactly (shared by the depth and face task modules).

The order is `common.resilience.StepSeededSampler`: sample number n of the run reads index
`permutation(seed + n // N)[n % N]`, an endless stream (Lightning stops on `max_steps`), and every sample's own
randomness (augmentation, the random partner from the other domain) is drawn from torch seeded with
`sample_seed(seed, n)` (`SeededSamples`). A run resumed after `start_batch` loader batches starts at sample
number `start_batch * batch_size` and sees exactly the batches the uninterrupted run saw, whatever the
DataLoader workers prefetched. The loader has its own generator, so creating its iterator draws nothing
from torch's global generator. Under DDP (Lightning's distributed sampler is switched off) rank r of W takes
sample numbers r, r + W, ... of the same stream (`ShardedStepSampler`), so the ranks see disjoint samples.
"""

from __future__ import annotations

from collections.abc import Callable

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset

from common.config import require
from common.resilience import SeededSamples, StepSeededSampler


class TwoDomains(Dataset):
    """Unpaired samples for SharinGAN: item i = {"synthetic": synthetic[i mod Ns], "real": a uniformly random
    real sample} (as the official loaders, which draw the two domains independently). The random partner is
    drawn from torch's generator, which `SeededSamples` seeds per sample number."""

    def __init__(self, synthetic: Dataset, real: Dataset) -> None:
        if len(synthetic) == 0 or len(real) == 0:
            raise ValueError(f"empty domain: {len(synthetic)} synthetic and {len(real)} real samples")
        self.synthetic, self.real = synthetic, real

    def __len__(self) -> int:
        return max(len(self.synthetic), len(self.real))

    def __getitem__(self, index: int) -> dict:
        real_index = int(torch.randint(len(self.real), ()).item())
        return {"synthetic": self.synthetic[index % len(self.synthetic)], "real": self.real[real_index]}


class SyntheticOnly(Dataset):
    """Synthetic samples alone, in the same {"synthetic": ...} batch form (task pretraining, stage 2)."""

    def __init__(self, synthetic: Dataset) -> None:
        self.synthetic = synthetic

    def __len__(self) -> int:
        return len(self.synthetic)

    def __getitem__(self, index: int) -> dict:
        return {"synthetic": self.synthetic[index]}


class ShardedStepSampler(StepSeededSampler):
    """`StepSeededSampler` (numbered) that gives rank r of W the sample numbers `start + r + k W`, where `start`
    counts the samples of all ranks; the rank is read from torch.distributed when iteration begins."""

    def __init__(self, length: int, seed: int, start_batch: int, batch_size: int) -> None:
        super().__init__(length, seed, numbered=True)
        self.start_batch, self.batch_size = int(start_batch), int(batch_size)

    @staticmethod
    def _shard() -> tuple[int, int]:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    def __iter__(self):
        rank, world = self._shard()
        self.start = self.start_batch * self.batch_size * world
        for k, item in enumerate(super().__iter__()):
            if k % world == rank:
                yield item


def resumable_loader(dataset: Dataset, batch_size: int, cfg: DictConfig, start_batch: int = 0) -> DataLoader:
    """Endless, drop-last batches of `batch_size` in the seeded order from batch `start_batch` (per rank) on."""
    seed = int(cfg.get("seed") or 0)
    sampler = ShardedStepSampler(len(dataset), seed, start_batch, batch_size)
    workers = int(cfg.data.num_workers)
    return DataLoader(SeededSamples(dataset, seed), batch_size=int(batch_size), sampler=sampler, drop_last=True,
                      num_workers=workers, persistent_workers=workers > 0,
                      generator=torch.Generator().manual_seed(seed))


STAGES = ("pretrain_generator", "pretrain_task", "train")


class TwoDomainDataModule(pl.LightningDataModule):
    """The training batches of one SharinGAN stage, for every task (`build_datamodule` of `sharingan/tasks/`).

    stage: "pretrain_generator" / "train" -> `TwoDomains` batches, "pretrain_task" -> `SyntheticOnly`; the task
    says which datasets (`training_dataset(cfg, stage)`, built on first `setup`). One loader batch holds
    `chunks` x the per-step batch size read from `batch_size_key` ("{stage}" is replaced by the stage name).
    Validation (`validation(cfg)` -> DataLoader | None) runs in the "train" stage only. `before_training(self)`,
    if given, runs at every `setup` until it returns True (the face task starts SfSNet's light layer there).
    `start_batch`: loader batches already consumed (a resumed run sets it from its checkpoint).
    """

    def __init__(self, cfg: DictConfig, stage: str, task: str, training_dataset: Callable[[DictConfig, str], Dataset],
                 batch_size_key: str, chunks: int,
                 validation: Callable[[DictConfig], DataLoader | None] | None = None,
                 before_training: Callable[[TwoDomainDataModule], bool] | None = None) -> None:
        super().__init__()
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r} for the {task} task (one of {STAGES})")
        self.cfg, self.stage, self.task = cfg, stage, task
        self.training_dataset, self.validation, self.before_training = training_dataset, validation, before_training
        self.batch_size_key, self.chunks = batch_size_key.replace("{stage}", stage), int(chunks)
        self.dataset: Dataset | None = None
        self.start_batch = 0
        self.prepared = before_training is None

    def setup(self, stage: str | None = None) -> None:
        if self.dataset is None:
            self.dataset = self.training_dataset(self.cfg, self.stage)
        if not self.prepared:
            self.prepared = bool(self.before_training(self))

    def train_dataloader(self) -> DataLoader:
        self.setup()
        batch_size = int(require(self.cfg, self.batch_size_key)) * self.chunks
        if len(self.dataset) < batch_size:
            raise ValueError(f"{self.stage}: {len(self.dataset)} samples cannot fill one batch of {batch_size} "
                             f"({self.batch_size_key} x {self.chunks} chunks)")
        return resumable_loader(self.dataset, batch_size, self.cfg, self.start_batch)

    def val_dataloader(self):
        loader = self.validation(self.cfg) if self.stage == "train" and self.validation is not None else None
        return loader if loader is not None else []
