"""A small batch-norm CNN with a one-cycle learning-rate schedule: the registry's most accurate model."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import OneCycleLR

from digitlab.errors import UserError
from digitlab.models.base import DigitModel, check_optimizer
from digitlab.models.registry import register_model


def _conv_block(channels_in: int, channels_out: int, kernel_size: int, padding: int) -> list[nn.Module]:
    # No bias: the batch norm's shift replaces it. Pooling first: batch norm and ReLU then touch a quarter of
    # the values, which is most of a CPU step's time at this width.
    return [nn.Conv2d(channels_in, channels_out, kernel_size, padding=padding, bias=False),
            nn.MaxPool2d(2), nn.BatchNorm2d(channels_out), nn.ReLU()]


@register_model("bncnn")
class BatchNormCNN(DigitModel):
    """Batch-norm CNN: conv 5x5x24, conv 3x3x40, conv 3x3x64, each max-pooled, then dense 10 (38,306 parameters).

    Each convolution is followed by 2x2 max-pooling, batch norm and ReLU; `width` scales the channels (3, 5 and
    8 times it). Weights and activations are kept channels-last (NHWC), the layout in which oneDNN's CPU
    convolutions and pooling are fastest; checkpoints and exported files hold the same shapes and values as
    in the default layout.

    The optimizer's learning rate is the peak of a one-cycle schedule stepped after every batch: it warms up
    from a 25th of the peak, then anneals to almost zero by the run's last step (`max_epochs`).

    Args:
        width: Sets the channels of the three convolutions: 3, 5 and 8 times this.
        label_smoothing: Share of each target's probability spread evenly over all classes in the loss.
        warmup: Share of the training steps spent raising the learning rate to its peak (``pct_start`` of
            `torch.optim.lr_scheduler.OneCycleLR`). Ignored when ``lr_scheduler`` is given: that scheduler
            then runs instead, stepped every epoch.
    """

    def __init__(
        self,
        width: int = 8,
        label_smoothing: float = 0.1,
        warmup: float = 0.25,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_optimizer(self.optimizer)  # the base checks only optimizers it builds itself; this one it builds too
        if width < 1:
            raise UserError(f"model.width={width} is not valid: expected a positive integer.")
        if not 0 <= label_smoothing < 1:
            raise UserError(f"model.label_smoothing={label_smoothing} is not valid: expected a number in [0, 1).")
        if not 0 < warmup < 1:
            raise UserError(f"model.warmup={warmup} is not valid: expected a share of the steps in (0, 1).")
        self.label_smoothing, self.warmup = label_smoothing, warmup
        first, second, third = 3 * width, 5 * width, 8 * width
        self.features = nn.Sequential(
            *_conv_block(1, first, 5, padding=0),  # 28 -> 24 -> 12
            *_conv_block(first, second, 3, padding=1),  # 12 -> 6
            *_conv_block(second, third, 3, padding=1),  # 6 -> 3
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(third * 3 * 3, self.num_classes))
        self.features.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x.contiguous(memory_format=torch.channels_last)))

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, targets, label_smoothing=self.label_smoothing)

    def configure_optimizers(self) -> Any:
        configured = super().configure_optimizers()
        if self.lr_scheduler is not None:
            return configured
        peaks = [group["lr"] for group in configured.param_groups]
        schedule = OneCycleLR(configured, max_lr=peaks, total_steps=self._total_steps(), pct_start=self.warmup)
        return {"optimizer": configured, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def _total_steps(self) -> int:
        # Known only once the trainer has its data: max_epochs (or max_steps) times the optimizer steps per epoch.
        steps = self.trainer.estimated_stepping_batches
        if not math.isfinite(steps):
            raise UserError("bncnn's one-cycle schedule needs the run's length: set trainer.max_epochs or "
                            "trainer.max_steps (or give model.lr_scheduler, a schedule of your own).")
        return max(1, int(steps))
