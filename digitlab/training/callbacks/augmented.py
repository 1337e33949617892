"""TensorBoard picture `train/augmentation`: training images before (top row) and after (bottom row) the data
module's random distortion, once per run."""

from __future__ import annotations

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from digitlab.training.callbacks.context import tensorboard_writer, training_split
from digitlab.training.callbacks.drawing import digit_grid


class AugmentationExamples(Callback):
    """Log the first `count` training images and the same images distorted as ``train/augmentation`` when
    fitting starts, if the data module distorts its training batches (``data.augment_*``)."""

    TAG = "train/augmentation"

    def __init__(self, count: int = 16) -> None:
        self.count = count

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        augmentation = getattr(trainer.datamodule, "augmentation", None)
        writer, split = tensorboard_writer(trainer), training_split(trainer)
        if writer is None or split is None or augmentation is None or not augmentation.active:
            return
        before = split[0][: self.count].unsqueeze(1).float().cpu() / 255
        after = augmentation(before, augmentation.generator(epoch=0, batch=0))
        picture = torch.cat([digit_grid(before), digit_grid(after)], dim=1)
        writer.add_image(self.TAG, picture, trainer.global_step, dataformats="CHW")
