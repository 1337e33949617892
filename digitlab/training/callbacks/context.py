"""What the picture callbacks read from a run: its TensorBoard writer, its training split, a step's logits."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Optional

import torch
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.rank_zero import WarningCache

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

_warnings = WarningCache()


def tensorboard_writer(trainer: Trainer) -> Optional[SummaryWriter]:
    """The run's TensorBoard writer on the global rank 0; None on other ranks and without a TensorBoardLogger.

    Pictures are drawn only where this is not None: other ranks and runs with ``logger: false`` skip the work.
    """
    if not trainer.is_global_zero:
        return None
    return next((logger.experiment for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)), None)


def training_split(trainer: Trainer) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
    """The datamodule's training images ``[N, 28, 28]`` (uint8) and labels ``[N]``, or None when it has none."""
    train_set = getattr(trainer.datamodule, "train_set", None)
    images, labels = getattr(train_set, "images", None), getattr(train_set, "labels", None)
    return None if images is None or labels is None else (images, labels)


def step_outputs(outputs: Any) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
    """``(logits, targets)`` from what a validation or test step returned (`DigitModel._evaluate`'s dict), or
    None, with a warning once, when the step returned nothing of the kind (a model with a step of its own)."""
    if isinstance(outputs, Mapping) and "logits" in outputs and "targets" in outputs:
        return outputs["logits"].detach(), outputs["targets"]
    _warnings.warn(
        "The model's validation/test step returns no {'logits', 'targets'} dict, so the confusion matrices, "
        "mistakes and per-class accuracies are left out. Return DigitModel._evaluate's result from the step."
    )
    return None
