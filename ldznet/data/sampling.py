"""Resumable training order for ldznet.train: data order and per-sample randomness as functions of
(seed, sample number), cut into Lightning epochs and sharded over DDP ranks (docs/chapter3-models.md "Resuming")."""

from __future__ import annotations

import torch
import torch.distributed as dist

from common.resilience import SeededSamples, StepSeededSampler


class EpochStepSampler(StepSeededSampler):
    """`StepSeededSampler` cut into Lightning epochs, sharded over DDP ranks, yielding (index, sample number).

    Epoch e is `permutation(seed + e)` (the same order `StepSeededSampler.index` gives sample numbers
    e*N .. e*N+N-1); rank r of W takes positions r, r+W, ... (N // W of them, so every rank has as many
    batches). `start` is the first sample number still to be drawn: a resumed run passes the value its
    checkpoint recorded and the epoch it resumes in skips what was consumed before. Lightning calls
    `set_epoch` (its distributed sampler is switched off: `use_distributed_sampler=False`); the rank is read
    from torch.distributed when it is initialised, so the sampler can be built before DDP starts.
    """

    def __init__(self, length: int, seed: int, start: int = 0) -> None:
        super().__init__(length, seed, start)
        self.epoch = 0

    @staticmethod
    def _shard() -> tuple[int, int]:
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    def __len__(self) -> int:
        return self.length // self._shard()[1]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        rank, world = self._shard()
        per_rank = self.length // world
        base = self.epoch * self.length
        skip = min(per_rank, max(0, -(-(self.start - base) // world)))  # ceil((start - base) / W), clipped
        order = torch.randperm(self.length, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        order = order.tolist()
        for k in range(skip, per_rank):
            position = rank + k * world
            yield order[position], base + position


class NumberedSamples(SeededSamples):
    """Training view of a dataset for `EpochStepSampler` (common.resilience.SeededSamples): item (index, sample
    number) -> the sample of `index`, its own randomness (square crop, prompt template) drawn from torch seeded
    with `sample_seed(seed, sample number)`, so it depends on neither workers nor prefetching nor what ran
    before. The collated batch carries `sample_number`. An empty prompt raises an error naming the sample.
    """

    def __getitem__(self, item) -> dict:
        sample = super().__getitem__(item)
        index, number = item
        prompt = sample.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"{type(self.dataset).__name__} sample {index} (image {sample.get('image_id')}) has an "
                             f"empty prompt {prompt!r}; training needs a phrase for every mask")
        sample["sample_number"] = int(number)
        return sample
