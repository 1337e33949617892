"""Stop a run whose training loss stops being finite, before a checkpoint can save the broken weights."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from digitlab.errors import TrainingDiverged


class StopOnNonFiniteLoss(Callback):
    """Raise `TrainingDiverged`, naming the epoch and step, as soon as the training loss is NaN or infinite.

    The loss is checked every `trainer.log_every_n_steps` steps and at the end of each epoch (where the
    logger reads it anyway), so the check adds no per-step host synchronisation. Raising, rather than
    asking the trainer to stop, keeps the epoch-end checkpoint from saving the broken weights: the last
    checkpoint on disk stays the last good one. Under DDP every process takes the same decision.
    """

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = getattr(pl_module, "last_train_loss", None)
        due = (trainer.global_step % max(1, trainer.log_every_n_steps) == 0
               or batch_idx + 1 == trainer.num_training_batches)
        if loss is None or not due:
            return
        diverged = trainer.strategy.reduce_boolean_decision(not bool(torch.isfinite(loss)), all=False)
        if diverged:
            raise TrainingDiverged(
                f"The training loss became {loss.item()} at epoch {trainer.current_epoch}, step "
                f"{trainer.global_step} (batch {batch_idx}); the run was stopped and no checkpoint of the "
                "diverged weights was written. Lower the learning rate, clip gradients, or check the data; "
                "the last good checkpoint (if any) is in the run's checkpoints/ folder."
            )
