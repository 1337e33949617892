"""Nearest class mean: the seed's nonparametric baseline. "Training" is one pass that averages each class."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from digitlab.batch import PAD_LABEL, Batch
from digitlab.errors import UserError
from digitlab.models.base import DigitModel
from digitlab.models.registry import register_model


@register_model("centroid")
class NearestCentroid(DigitModel):
    """Nearest class mean: predicts the class whose mean training image is nearest by mean squared error.

    Fitting is one pass over the training split that sums the pixels of each class; the means are kept in
    buffers (saved in checkpoints). Under DDP the per-process sums and counts are all-reduced, so every
    process holds the same means. The logits are the negative mean squared distances divided by
    `temperature`, so ``softmax`` gives a probability-like score while the prediction stays the nearest mean.

    Args:
        temperature: Distance scale of the logits; smaller gives more confident probabilities.
        num_classes: Number of classes.
    """

    def __init__(self, temperature: float = 0.01, num_classes: int = 10) -> None:
        super().__init__(num_classes=num_classes)
        if temperature <= 0:
            raise UserError(f"model.temperature={temperature} is not valid: expected a positive number.")
        self.automatic_optimization = False
        self.register_buffer("means", torch.zeros(num_classes, 28 * 28, dtype=torch.float64))
        self.register_buffer("counts", torch.zeros(num_classes, dtype=torch.long))
        # DDP refuses a module without a trainable parameter. The temperature is one: it scales the
        # logits and is never updated (nothing here calls backward), so it keeps its configured value.
        self.temperature = nn.Parameter(torch.tensor(float(temperature)))
        self._sums: torch.Tensor | None = None
        self._seen: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pixels = x.flatten(1).to(self.means.dtype)
        # Mean squared error to every class mean, ||x||^2 - 2 x.m + ||m||^2, in float64 for exact ties.
        squared = (pixels**2).sum(1, keepdim=True) - 2 * pixels @ self.means.T + (self.means**2).sum(1)
        mse = squared / pixels.shape[1]
        return (-mse / self.temperature.detach().to(mse.dtype)).float()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # Nothing is optimized, but Lightning counts training steps (global_step) by optimizer steps, and
        # checkpointing and max_steps rely on that count: a zero-lr optimizer is stepped once per batch.
        return torch.optim.SGD([self.temperature], lr=0.0)

    def on_train_epoch_start(self) -> None:
        # Every epoch recomputes the means from scratch, so more epochs give the same model.
        self._sums = torch.zeros_like(self.means)
        self._seen = torch.zeros_like(self.counts)

    def training_step(self, batch: Batch, batch_idx: int) -> None:
        # Accumulators are plain tensors, not buffers: DDP re-broadcasts rank 0's buffers at every forward.
        images, targets = batch
        real = targets != PAD_LABEL  # DDP padding, never an image
        # Pixels k/255 in float32 are multiples of 2**-31 below 1, so float64 sums of up to 2**21 of them
        # are exact: neither the order nor the number of processes can change the means. Padding images are
        # blank (the batch contract), so they are added to class 0 as zeros instead of being masked out: a
        # copy of the batch saved.
        self._sums.index_add_(0, targets.clamp(min=0), images.flatten(1).to(self._sums.dtype))
        self._seen += torch.bincount(targets[real], minlength=self.num_classes)
        self.optimizers().step()

    def on_train_batch_end(self, outputs: Any, batch: Batch, batch_idx: int) -> None:
        # Finish at the last batch: checkpoint callbacks run their epoch-end hooks before the module's.
        if batch_idx + 1 == self.trainer.num_training_batches:
            self._finish_means()

    def on_train_epoch_end(self) -> None:
        self._finish_means()  # an epoch cut short (max_steps) still ends with means

    def _finish_means(self) -> None:
        if self._sums is None or self.trainer.sanity_checking:
            return
        sums = self.trainer.strategy.reduce(self._sums, reduce_op="sum")
        seen = self.trainer.strategy.reduce(self._seen, reduce_op="sum")
        if (seen == 0).any():
            missing = [k for k in range(self.num_classes) if seen[k] == 0]
            warnings.warn(f"No training images of class(es) {missing}: their means stay zero.", stacklevel=2)
        self.means.copy_(sums / seen.clamp(min=1).unsqueeze(1))
        self.counts.copy_(seen)
        self._sums = self._seen = None

    def class_means(self) -> torch.Tensor:
        """The mean image of each class, ``[num_classes, 1, 28, 28]`` (the seed's "average digits")."""
        return self.means.float().reshape(self.num_classes, 1, 28, 28)
