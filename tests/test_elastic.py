"""Under TorchElastic: the lost-peer error as one paragraph, and when digitlab makes the process group itself (a
key space per restart) or leaves it to Lightning."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch.distributed as dist
from lightning.pytorch import Trainer

from digitlab.training.elastic import init_process_group_of_this_attempt, peer_lost

GLOO_RESET = ("[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:545] Read error "
              "[127.0.0.1]:25310: Connection reset by peer. This is typically caused by a remote worker hanging or bugs")


def trainer(world_size: int = 2, last: str = "") -> SimpleNamespace:
    return SimpleNamespace(world_size=world_size, global_rank=1, current_epoch=2, global_step=70,
                           checkpoint_callback=SimpleNamespace(last_model_path=last))


@pytest.mark.parametrize("message", [GLOO_RESET, "NCCL error: remote process exited or there was a network error",
                                     "[../gloo/transport/tcp/unbound_buffer.cc:81] Timed out waiting 1800000ms",
                                     "Connection closed by peer [127.0.0.1]:4242"])
def test_a_lost_peer_is_one_paragraph(message):
    lost = peer_lost(RuntimeError(message), trainer(last="lightning_logs/version_0/checkpoints/last.ckpt"))
    assert lost is not None and lost.exit_code == 1 and lost.label == "stopped"
    text = str(lost)
    assert text.startswith("by the loss of another process of this run (rank 1 of 2 heard: ")
    assert "at epoch 2, step 70" in text and "lightning_logs/version_0/checkpoints/last.ckpt" in text
    assert "pair.cc" not in text and "typically caused" not in text and "\n" not in text


def test_other_errors_and_one_process_keep_their_traceback():
    assert peer_lost(RuntimeError("mat1 and mat2 shapes cannot be multiplied"), trainer()) is None
    assert peer_lost(RuntimeError(GLOO_RESET), trainer(world_size=1)) is None
    assert peer_lost(ValueError(GLOO_RESET), trainer()) is None
    assert "No checkpoint had been saved" in str(peer_lost(RuntimeError(GLOO_RESET), trainer()))


def test_the_process_group_is_left_to_lightning_outside_torchelastic(monkeypatch):
    monkeypatch.delenv("TORCHELASTIC_USE_AGENT_STORE", raising=False)
    fit = Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False)
    init_process_group_of_this_attempt(fit)  # would need a store to connect to: returns before
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "True")
    init_process_group_of_this_attempt(fit)  # one process, no DDP: nothing to make
    assert not dist.is_initialized()
