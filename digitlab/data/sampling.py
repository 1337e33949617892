"""Shuffled batches whose order depends only on (seed, epoch) and the process's rank, so that a resumed run sees
the same batches, and a loader that resumes halfway through an epoch, on every process of a DDP run."""

from __future__ import annotations

from typing import Callable, Iterator, Optional

import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler


class EpochShuffle(Sampler[int]):
    """A new permutation of ``range(length)`` each epoch, drawn from ``seed + epoch`` alone; of a DDP run's
    `replicas` processes, process `rank` takes every `replicas`-th index of it from the `rank`-th, as
    PyTorch's `DistributedSampler` does (`length` must then be a multiple of `replicas`: the data module pads).

    PyTorch's `RandomSampler` draws from the global random state, which a checkpoint does not hold, so a
    run resumed after epoch k would shuffle epoch k+1 differently from the uninterrupted run. Lightning calls
    `set_epoch` before every epoch.
    """

    def __init__(self, length: int, seed: int, rank: int = 0, replicas: int = 1) -> None:
        if length % replicas:
            raise ValueError(f"{length} indices cannot be shared equally by {replicas} processes")
        self.length = length
        self.seed = seed
        self.rank = rank
        self.replicas = replicas
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length // self.replicas

    def permutation(self) -> torch.Tensor:
        """This process's indices for the epoch, in order."""
        order = torch.randperm(self.length, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        return order[self.rank::self.replicas]

    def __iter__(self) -> Iterator[int]:
        return iter(self.permutation().tolist())


class TensorBatches(DistributedSampler):
    """Batches of indices as slices of one permutation tensor, for the ``sampler`` of a DataLoader made with
    ``batch_size=None`` (each index it yields is a whole batch's).

    PyTorch's `BatchSampler` builds a Python list of ints for every batch, which the data set then turns
    back into a tensor: for a model as small as the MLP that costs a noticeable share of each step.
    It is a `DistributedSampler` because under DDP Lightning replaces any other sampler by one of its own,
    whose position within an epoch no checkpoint holds; this one already gives each process its own share
    (`sampler.rank`), so that a run resumed halfway through an epoch continues exactly, on every process.
    """

    def __init__(self, sampler: EpochShuffle, batch_size: int) -> None:
        super().__init__(range(sampler.length), num_replicas=sampler.replicas, rank=sampler.rank, shuffle=False)
        self.sampler = sampler
        self.batch_size = batch_size
        self._resume: Optional[tuple[int, int]] = None  # (epoch, batches already done in it)

    def set_epoch(self, epoch: int) -> None:  # Lightning calls it on the DataLoader's sampler before every epoch
        self.sampler.set_epoch(epoch)

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
    """A DataLoader over `TensorBatches` (its ``sampler``) that a checkpoint can save and restore halfway
    through an epoch.

    It follows Lightning's stateful-dataloader protocol (``state_dict``/``load_state_dict``): a run resumed
    from a checkpoint taken mid-epoch gets exactly the rest of that epoch's batches, in the same order. The
    position comes from the trainer (`batches_done`: the batches whose training step finished), not from the
    loader's own count, which runs ahead by the batch Lightning fetches in advance. Under DDP, Lightning saves
    rank 0's state only, and every process restores it: the position is the same on every process (each has
    as many batches per epoch), and each process's batches follow from its rank.
    """

    batches_done: Optional[Callable[[], int]] = None

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.sampler.sampler.epoch, "batches_done": self.batches_done() if self.batches_done else 0}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.resume(state["epoch"], state["batches_done"])
