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

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.length, generator=generator).tolist())
