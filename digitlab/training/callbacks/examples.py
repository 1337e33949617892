"""TensorBoard picture `train/examples`: the first training image of each class, once per run."""

from __future__ import annotations

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from digitlab.training.callbacks.context import tensorboard_writer, training_split
from digitlab.training.callbacks.drawing import digit_grid


class ClassExamples(Callback):
    """Log one training image per class (0 to 9, left to right) as ``train/examples`` when fitting starts.

    A class without training images gets a blank tile, so position k always shows class k.
    """

    TAG = "train/examples"

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        writer, split = tensorboard_writer(trainer), training_split(trainer)
        if writer is None or split is None:
            return
        images, labels = split
        tiles = torch.zeros(pl_module.num_classes, 1, *images.shape[1:])
        for k in range(pl_module.num_classes):
            first = (labels == k).nonzero()
            if len(first):
                tiles[k, 0] = images[first[0, 0]].float() / 255
        writer.add_image(self.TAG, digit_grid(tiles), trainer.global_step, dataformats="CHW")
