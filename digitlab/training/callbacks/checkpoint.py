"""`ModelCheckpoint`: Lightning's, with ``save_last`` meaning "after every epoch", and best checkpoints that
survive a resume into a new run folder."""

from __future__ import annotations

from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint as LightningModelCheckpoint

from digitlab.training.compat import LastCheckpointOnDemand


class ModelCheckpoint(LastCheckpointOnDemand, LightningModelCheckpoint):
    """Lightning's `ModelCheckpoint` with three differences; every argument is Lightning's.

    - ``save_last: true`` writes ``last.ckpt`` at the end of every training epoch, after validation, so it
      always holds the newest weights. Lightning's writes it only in an epoch where a monitored (top-k)
      checkpoint was saved, so with ``monitor`` set it lags behind as soon as the metric stops improving.
    - Resuming with ``--ckpt_path`` starts a new run folder. Lightning then forgets the earlier run's best
      checkpoints, so ``best`` (the test after fit) would mean the best of the resumed epochs only. Here the
      earlier best checkpoints are remembered where they are (never moved or deleted: they belong to the
      earlier run), so ``best`` is the best of all epochs, exactly as without the interruption.
    - With ``fast_dev_run``, nothing is written (Lightning still wrote ``last.ckpt`` when training ended).

    `last_every_n_steps` (``--last_checkpoint_every_n_steps``) also writes ``last.ckpt`` every that many training
    steps (0: never mid-epoch). A run resumed from it continues batch-exact: the data loader's position is saved.
    """

    last_every_n_steps = 0

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        every = self.last_every_n_steps
        if self.save_last and every and trainer.global_step % every == 0 and not trainer.fast_dev_run:
            self.save_last_now(trainer)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # The epoch is not over yet: last.ckpt is written once, in `on_train_epoch_end`, which comes after.
        with self.last_held_back():
            super().on_validation_end(trainer, pl_module)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        with self.last_held_back():  # Lightning's own rule would write last.ckpt only with a top-k checkpoint
            super().on_train_epoch_end(trainer, pl_module)
        if self.save_last and not (trainer.fast_dev_run or trainer.sanity_checking):
            self.save_last_now(trainer)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.fast_dev_run:
            super().on_train_end(trainer, pl_module)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Read the earlier run's state as if it were this folder's: Lightning only ever deletes checkpoints
        # inside this run's own folder, so the earlier run's files stay untouched.
        super().load_state_dict({**state_dict, "dirpath": self.dirpath})
