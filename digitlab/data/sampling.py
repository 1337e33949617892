"""Shuffled batches whose order depends only on (seed, epoch), so that a resumed run sees the same batches, and
a loader that resumes halfway through an epoch."""

from __future__ import annotations

from typing import Callable, Iterator, Optional

import torch
from torch.utils.data import DataLoader, Sampler


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
        self._resume: Optional[tuple[int, int]] = None  # (epoch, batches already done in it)

    def resume(self, epoch: int, batches_done: int) -> None:
        """Make the next iteration, if it is over `epoch`, start after its first `batches_done` batches."""
        self._resume = (epoch, batches_done)

    def __len__(self) -> int:
        return (len(self.sampler) + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[torch.Tensor]:
        # A generator: the permutation is drawn at the first batch, after Lightning's `set_epoch`, even when
        # the DataLoader's iterator was created before it.
        batches = self.sampler.permutation().split(self.batch_size)
        resume, self._resume = self._resume, None
        skip = resume[1] if resume is not None and resume[0] == self.sampler.epoch else 0
        yield from batches[skip:]


class ResumableLoader(DataLoader):
    """A DataLoader over `TensorBatches` that a checkpoint can save and restore halfway through an epoch.

    It follows Lightning's stateful-dataloader protocol (``state_dict``/``load_state_dict``): a run resumed
    from a checkpoint taken mid-epoch gets exactly the rest of that epoch's batches, in the same order. The
    position comes from the trainer (`batches_done`: the batches whose training step finished), not from the
    loader's own count, which runs ahead by the batch Lightning fetches in advance.
    """

    batches_done: Optional[Callable[[], int]] = None

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.batch_sampler.sampler.epoch, "batches_done": self.batches_done() if self.batches_done else 0}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.batch_sampler.resume(state["epoch"], state["batches_done"])
