"""Test-only: a callback that lets a test see inside every rank of a multi-process launch. Named in a config's
`trainer.callbacks` (with tests/cluster on PYTHONPATH), so that the launch stays exactly a user's launch.

    - class_path: rank_records.RecordRanks
      init_args: {out: /tmp/some/folder}

Every process that calls `MNISTDataModule.prepare_data` appends one line to OUT/prepare_data.jsonl (stage, node,
global and local rank, data folder); every rank appends its global rank and process id to OUT/ranks.jsonl when a
stage starts, and saves its model's weights to OUT/weights-rank<R>.pt at the end of `fit`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from lightning.pytorch import Callback

from digitlab.data import MNISTDataModule

_prepare_data = MNISTDataModule.prepare_data


class RecordRanks(Callback):
    def __init__(self, out: str) -> None:
        self.out = Path(out)
        log = self.out / "prepare_data.jsonl"

        def recorded(module: MNISTDataModule) -> None:
            trainer = module.trainer
            _append(log, {"stage": str(trainer.state.fn.value), "node": trainer.node_rank,
                          "global_rank": trainer.global_rank, "local_rank": trainer.local_rank,
                          "data_dir": str(module.data_dir)})
            _prepare_data(module)

        MNISTDataModule.prepare_data = recorded  # this process only: the callback is made before the run starts

    def setup(self, trainer, pl_module, stage: str) -> None:
        _append(self.out / "ranks.jsonl", {"stage": stage, "global_rank": trainer.global_rank, "pid": os.getpid()})

    def on_fit_end(self, trainer, pl_module) -> None:
        weights = {name: value.detach().cpu().clone() for name, value in pl_module.state_dict().items()}
        torch.save(weights, self.out / f"weights-rank{trainer.global_rank}.pt")


def _append(path: Path, record: dict) -> None:
    """One JSON line appended to `path` in one write, so that the lines of several processes never mix."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        os.write(descriptor, (json.dumps(record) + "\n").encode())
    finally:
        os.close(descriptor)
