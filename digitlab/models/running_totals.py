"""Training-step totals kept as one small tensor, so that a step adds no metric overhead and no host sync."""

from __future__ import annotations

from typing import Optional

import torch
from torchmetrics import MeanMetric

from digitlab.batch import PAD_LABEL


class RunningTotals:
    """Correct predictions, summed loss and number of real images of the training steps since the last flush.

    `torchmetrics` objects are what digitlab logs and syncs across processes, but their ``update`` costs
    far more than a few tensor operations on a CPU, a sizeable share of the whole MLP step, and a
    ``MeanMetric`` weight given as a number is a host sync on a GPU. Here a step costs a handful of tensor
    operations on the batch's device; the totals go into the metric objects once per epoch (`flush`), where a
    host sync does no harm.
    """

    def __init__(self) -> None:
        self.sums: Optional[torch.Tensor] = None  # [correct, loss * images, images]
        self.last_loss: Optional[torch.Tensor] = None  # the latest step's loss per image

    def add(self, loss: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """One step: `loss` per image, ``[N, C]`` `logits` and ``[N]`` `targets` (`PAD_LABEL` is ignored)."""
        self.last_loss = loss
        images = (targets != PAD_LABEL).sum()
        correct = (logits.argmax(dim=1) == targets).sum()  # a padding label never equals a class
        step = torch.stack((correct.float(), loss.float() * images, images.float()))
        # .to: a no-op, except for totals restored from a checkpoint onto another device
        self.sums = step if self.sums is None else self.sums.to(step.device).add_(step)

    def flush(self, accuracy: MeanMetric, loss: MeanMetric) -> None:
        """Add the totals to the epoch's `accuracy` and `loss` metrics (weighted by images), then start over."""
        if self.sums is None:
            return
        correct, summed_loss, images = self.sums
        per_image = images.clamp(min=1)  # a process that saw only padding adds zero weight, not NaN
        accuracy.update(correct / per_image, weight=images)
        loss.update(summed_loss / per_image, weight=images)
        self.sums = None
