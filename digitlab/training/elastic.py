"""The process group of a TorchElastic worker group, made in a key space of its own restart.

Under ``torchrun``, every worker meets the others through the agent's store (TORCHELASTIC_USE_AGENT_STORE), and
torch's ``env://`` rendezvous expects the agent to make a new store for every restart, so it adds no prefix of its
own (torch/distributed/rendezvous.py). torchrun's agent keeps one store for all its restarts: the restarted group
finds the addresses the dead group left there, and gloo fails with "Connection refused", NCCL waits for peers that
are gone (pytorch/pytorch#167288). Here the default process group is made before Lightning's DDP would make it, on
the agent's store under ``digitlab/attempt_{TORCHELASTIC_RESTART_COUNT}/``; Lightning then uses the group as it
finds it (its DDP strategy accepts a process group made beforehand).
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from typing import Optional

import torch.distributed as dist
from lightning.pytorch import Trainer
from lightning.pytorch.strategies import DDPStrategy

from digitlab.errors import PeerLost
from digitlab.runs.restarts import resume_hint

TIMEOUT = timedelta(minutes=30)  # torch's and Lightning's default for a process group's collectives


def end_process_group() -> None:
    """Destroy the default process group, if there is one, before the interpreter exits. Neither Lightning (for
    gloo) nor torch does; gloo's threads then sometimes abort the process as it exits ("terminate called without
    an active exception", SIGABRT), turning a finished run into a failed command (pytorch/pytorch#190489)."""
    if dist.is_available() and dist.is_initialized():
        try:
            dist.destroy_process_group()
        except (RuntimeError, ValueError):  # a group whose peers are gone: the process ends anyway
            pass


def init_process_group_of_this_attempt(trainer: Trainer) -> None:
    """Make the default process group on the agent's store, under this restart's own prefix, when the trainer runs
    DDP under a TorchElastic agent whose store the workers share; otherwise leave it to Lightning."""
    if (os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True" or not isinstance(trainer.strategy, DDPStrategy)
            or not dist.is_available() or dist.is_initialized()):
        return
    world_size, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
    if world_size != trainer.world_size:
        return  # Lightning explains the mismatch between the launch and num_nodes x devices
    agent = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size, is_master=False,
                          timeout=TIMEOUT)
    store = dist.PrefixStore(f"digitlab/attempt_{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/", agent)
    backend = trainer.strategy.process_group_backend or ("nccl" if trainer.strategy.root_device.type == "cuda"
                                                         else "gloo")
    dist.init_process_group(backend, store=store, rank=rank, world_size=world_size, timeout=TIMEOUT)


# What gloo and NCCL say when another process of the group is gone: its sockets closed, or it stopped answering.
_PEER_LOST = re.compile(r"Connection (reset|closed) by peer|Connection refused|remote process exited|"
                        r"Broken pipe|Socket Timeout|timed out|NCCL communicator was aborted", re.IGNORECASE)


def peer_lost(error: BaseException, trainer: Trainer) -> Optional[PeerLost]:
    """`error`, raised by a collective of a multi-process run because another process is gone, as one paragraph
    (None for any other error)."""
    if trainer.world_size == 1 or not isinstance(error, RuntimeError) or not _PEER_LOST.search(str(error)):
        return None
    said = str(error).strip().splitlines()[0]
    said = re.sub(r"^\[[^\]]*\] ", "", said).split(". ")[0][:200]  # without the C++ source position in front
    last = getattr(trainer.checkpoint_callback, "last_model_path", "") or None
    resume = f"The newest checkpoint is {last}: {resume_hint()}." if last else "No checkpoint had been saved."
    return PeerLost(f"by the loss of another process of this run (rank {trainer.global_rank} of "
                    f"{trainer.world_size} heard: {said}), at epoch {trainer.current_epoch}, step "
                    f"{trainer.global_step}. {resume}")
