"""Shuffled training batches: an order drawn from (seed, epoch) alone, shared out by rank under DDP, and a loader
that resumes halfway through an epoch on every process from the state rank 0 saved."""

import torch
from torch.utils.data import DistributedSampler

from digitlab.data.mnist import InMemoryDigits, keep_batch
from digitlab.data.sampling import EpochShuffle, ResumableLoader, TensorBatches


def loader(rank: int, replicas: int, length: int = 24, batch_size: int = 4, seed: int = 7) -> ResumableLoader:
    data = InMemoryDigits(torch.arange(length, dtype=torch.uint8)[:, None, None].expand(length, 28, 28).clone(),
                          torch.arange(length))
    batches = TensorBatches(EpochShuffle(length, seed, rank, replicas), batch_size)
    return ResumableLoader(data, sampler=batches, batch_size=None, collate_fn=keep_batch)


def labels_of(batches) -> list[list[int]]:
    return [labels.tolist() for _, labels in batches]


def test_the_processes_share_out_each_epoch_without_overlap():
    for epoch in (0, 1):
        shares = []
        for rank in range(3):
            share = loader(rank, 3)
            share.sampler.set_epoch(epoch)
            shares.append(sum(labels_of(share), []))
        assert all(len(share) == 8 for share in shares)
        assert sorted(sum(shares, [])) == list(range(24))  # every image once per epoch, on one process
        whole = EpochShuffle(24, 7).permutation() if epoch == 0 else None
        if whole is not None:  # each process takes every third index of the one permutation
            assert shares[1] == whole[1::3].tolist()
    epoch0, epoch1 = (loader(0, 3) for _ in range(2))
    epoch1.sampler.set_epoch(1)
    assert labels_of(epoch0) != labels_of(epoch1)


def test_lightning_keeps_the_sampler_under_ddp():
    # Lightning replaces a training loader's sampler under DDP unless it is a DistributedSampler.
    assert isinstance(loader(1, 2).sampler, DistributedSampler)
    assert len(loader(1, 2)) == 3  # batches per process: 12 images in batches of 4


def test_every_process_resumes_its_own_batches_from_rank_zeros_state():
    for rank in range(2):
        uninterrupted = loader(rank, 2)
        uninterrupted.sampler.set_epoch(3)
        expected = labels_of(uninterrupted)[2:]
        saver = loader(0, 2)  # Lightning saves rank 0's loader state only
        saver.sampler.set_epoch(3)
        saver.batches_done = lambda: 2
        state = saver.state_dict()
        resumed = loader(rank, 2)
        resumed.load_state_dict(state)
        resumed.sampler.set_epoch(3)
        assert labels_of(resumed) == expected and len(expected) == 1
        assert len(labels_of(resumed)) == 3  # the next epoch, whole again
