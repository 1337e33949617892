"""TensorBoard pictures `val/confusion_matrix` and `test/confusion_matrix`, and `test/acc_class_<k>` scalars."""

from __future__ import annotations

import math
import time
from typing import Any, Optional

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn
from torchmetrics.classification import MulticlassConfusionMatrix

from digitlab.training.callbacks.context import step_outputs, tensorboard_writer
from digitlab.training.callbacks.drawing import confusion_matrix_image
from digitlab.batch import PAD_LABEL


class ConfusionMatrix(Callback):
    """Confusion matrix (with counts) of each validation epoch and of the test set, and per-class test accuracy.

    Every process updates a torchmetrics `MulticlassConfusionMatrix` with its share of the batches (DDP
    padding, labelled -100, is ignored); computing it syncs the counts, so the figure that rank 0 draws
    covers the whole split. The test's per-class accuracies (diagonal / row sums) are logged through the
    module as ``test/acc_class_0`` ... ``test/acc_class_9``, for every class with test images: they appear in
    the printed test table and in TensorBoard. The sanity check's validation is not drawn.

    While fitting, a validation epoch's matrix is drawn when at least `every_seconds` have passed since the
    last one was drawn (so the first epoch's is), and the last epoch's always is, when training ends or is
    interrupted: a picture every few epochs shows how the mistakes evolve, and a fast run's epochs do not
    wait for pictures nobody looks at. `digitlab validate` and the test draw theirs at once.

    Args:
        every_seconds: Least time between two validation pictures while fitting; 0 draws every epoch.
    """

    def __init__(self, every_seconds: float = 10.0) -> None:
        self.every_seconds = every_seconds
        self._pending: Optional[tuple[torch.Tensor, str, int, str]] = None  # (matrix, title, step, stage) to draw
        self._last_drawn = -math.inf

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.matrix = MulticlassConfusionMatrix(pl_module.num_classes, ignore_index=PAD_LABEL)
        self._pending, self._last_drawn = None, -math.inf

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start(pl_module)

    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start(pl_module)

    def on_validation_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, *args: Any,
                                **kwargs: Any) -> None:
        self._update(outputs)

    def on_test_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, *args: Any,
                          **kwargs: Any) -> None:
        self._update(outputs)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        fitting = trainer.state.fn == TrainerFn.FITTING
        self._finish(trainer, "val", draw_now=not fitting or time.monotonic() - self._last_drawn >= self.every_seconds)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._draw_pending(trainer)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._draw_pending(trainer)

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        matrix = self._finish(trainer, "test", draw_now=True)
        if matrix is None:
            return
        totals = matrix.sum(1)
        for k in range(len(matrix)):
            if totals[k] > 0:
                # Already global (the matrix was synced): reducing identical values with max keeps them exact.
                pl_module.log(f"test/acc_class_{k}", matrix[k, k] / totals[k], sync_dist=True, reduce_fx="max")

    def _start(self, pl_module: LightningModule) -> None:
        self.matrix = self.matrix.to(pl_module.device)
        self.matrix.reset()

    def _update(self, outputs: Any) -> None:
        predictions = step_outputs(outputs)
        if predictions is not None:
            self.matrix.update(*predictions)

    def _finish(self, trainer: Trainer, stage: str, draw_now: bool) -> Optional[torch.Tensor]:
        """The synced matrix (every process must call this), kept to be drawn on rank 0 (at once if
        `draw_now`); None if nothing was seen."""
        if self.matrix.update_count == 0:  # the same on every process: they all run the same batches
            return None
        matrix = self.matrix.compute()
        self.matrix.reset()
        if trainer.is_global_zero:
            total = int(matrix.sum())
            where = f"validation, epoch {trainer.current_epoch}" if stage == "val" else "test"
            title = f"{where}: {total} images, accuracy {float(matrix.trace()) / max(total, 1):.4f}"
            self._pending = (matrix.cpu(), title, trainer.global_step, stage)
            if draw_now:
                self._draw_pending(trainer)
        return matrix

    def _draw_pending(self, trainer: Trainer) -> None:
        pending, self._pending = self._pending, None
        writer = tensorboard_writer(trainer)
        if pending is None or writer is None:
            return
        matrix, title, step, stage = pending
        writer.add_image(f"{stage}/confusion_matrix", confusion_matrix_image(matrix, title), step, dataformats="CHW")
        self._last_drawn = time.monotonic()
