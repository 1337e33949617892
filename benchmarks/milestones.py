"""A callback for benchmarks/time_to_accuracy.py, given to `digitlab fit` with ``--trainer.callbacks+=``: the
training time (validation, checkpoints and pictures left out) until val/acc first reaches each milestone,
written as JSON."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import torch
from lightning.pytorch import Callback


class MilestoneClock(Callback):
    def __init__(self, path: str, milestones: list[float]) -> None:
        self.path, self.milestones = Path(path), sorted(milestones)
        self.training_seconds = 0.0
        self.reached: dict[str, dict] = {}
        self.started: Optional[float] = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.started = time.perf_counter()

    def _stop(self, pl_module) -> None:
        if self.started is None:
            return
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)  # the epoch's queued GPU work belongs to its time
        self.training_seconds += time.perf_counter() - self.started
        self.started = None

    # Lightning validates after the epoch's last training batch, before on_train_epoch_end: the epoch's
    # training ends where its validation starts.
    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._stop(pl_module)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._stop(pl_module)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or "val/acc" not in trainer.callback_metrics:
            return
        accuracy = float(trainer.callback_metrics["val/acc"])
        for milestone in self.milestones:
            if str(milestone) not in self.reached and accuracy >= milestone:
                self.reached[str(milestone)] = {"seconds": self.training_seconds, "epochs": trainer.current_epoch + 1}
        self._write(trainer)

    def on_fit_end(self, trainer, pl_module) -> None:
        self._write(trainer)

    def _write(self, trainer) -> None:
        if trainer.is_global_zero:
            self.path.write_text(json.dumps({"reached": self.reached, "training_seconds": self.training_seconds,
                                             "epochs": trainer.current_epoch}))
