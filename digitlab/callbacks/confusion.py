"""TensorBoard pictures `val/confusion_matrix` and `test/confusion_matrix`, and `test/acc_class_<k>` scalars."""

from __future__ import annotations

from typing import Any, Optional

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torchmetrics.classification import MulticlassConfusionMatrix

from digitlab.callbacks.context import step_outputs, tensorboard_writer
from digitlab.callbacks.drawing import confusion_matrix_image
from digitlab.batch import PAD_LABEL


class ConfusionMatrix(Callback):
    """Confusion matrix (with counts) of each validation epoch and of the test set, and per-class test accuracy.

    Every process updates a torchmetrics `MulticlassConfusionMatrix` with its share of the batches (DDP
    padding, labelled -100, is ignored); computing it syncs the counts, so the figure that rank 0 draws
    covers the whole split. The test's per-class accuracies (diagonal / row sums) are logged through the
    module as ``test/acc_class_0`` ... ``test/acc_class_9``, for every class with test images: they appear in
    the printed test table and in TensorBoard. The sanity check's validation is not drawn.
    """

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.matrix = MulticlassConfusionMatrix(pl_module.num_classes, ignore_index=PAD_LABEL)

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
        if not trainer.sanity_checking:
            self._finish(trainer, "val")

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        matrix = self._finish(trainer, "test")
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

    def _finish(self, trainer: Trainer, stage: str) -> Optional[torch.Tensor]:
        """The synced matrix (every process must call this), drawn on rank 0; None if nothing was seen."""
        if self.matrix.update_count == 0:  # the same on every process: they all run the same batches
            return None
        matrix = self.matrix.compute()
        self.matrix.reset()
        writer = tensorboard_writer(trainer)
        if writer is not None:
            total = int(matrix.sum())
            where = f"validation, epoch {trainer.current_epoch}" if stage == "val" else "test"
            title = f"{where}: {total} images, accuracy {float(matrix.trace()) / max(total, 1):.4f}"
            image = confusion_matrix_image(matrix, title)
            writer.add_image(f"{stage}/confusion_matrix", image, trainer.global_step, dataformats="CHW")
        return matrix
