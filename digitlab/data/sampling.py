"""A shuffling sampler whose order depends only on (seed, epoch), so a resumed run sees the same batches."""

from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Sampler


class EpochShuffle(Sampler[int]):
    """A new permutation of ``range(length)`` each epoch, drawn from ``seed + epoch`` alone.

    PyTorch's `RandomSampler` draws from the global random state, which a checkpoint does not hold, so a
    run resumed after epoch k would shuffle epoch k+1 differently from the uninterrupted run. Lightning calls
    `set_epoch` before every epoch, as it does for `DistributedSampler` (used instead under DDP).
    """

    def __init__(self, length: int, seed: int) -> None:
        self.length = length
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def permutation(self) -> torch.Tensor:
        return torch.randperm(self.length, generator=torch.Generator().manual_seed(self.seed + self.epoch))

    def __iter__(self) -> Iterator[int]:
        return iter(self.permutation().tolist())


class TensorBatches(Sampler[torch.Tensor]):
    """Batches of indices as slices of one permutation tensor, for a DataLoader's ``batch_sampler``.

    PyTorch's `BatchSampler` builds a Python list of ints for every batch, which the data set then turns
    back into a tensor: for a model as small as the MLP that costs a noticeable share of each step.
    `sampler` is exposed because Lightning calls ``batch_sampler.sampler.set_epoch`` before every epoch.
    """

    def __init__(self, sampler: EpochShuffle, batch_size: int) -> None:
        self.sampler = sampler
        self.batch_size = batch_size

    def __len__(self) -> int:
        return (len(self.sampler) + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[torch.Tensor]:
        # A generator: the permutation is drawn at the first batch, after Lightning's `set_epoch`, even when
        # the DataLoader's iterator was created before it.
        yield from self.sampler.permutation().split(self.batch_size)
