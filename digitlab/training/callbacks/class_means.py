"""TensorBoard picture `train/class_means`: the mean training image of each class, once per run."""

from __future__ import annotations

from typing import Optional

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from digitlab.training.callbacks.context import tensorboard_writer, training_split
from digitlab.training.callbacks.drawing import digit_grid


class ClassMeans(Callback):
    """Log the ten class means (0 to 9, left to right) as ``train/class_means`` when training ends.

    A model with a ``class_means()`` method (the centroid model: its "average digits") is drawn from it;
    for any other model the means are computed from the datamodule's training split. Either way they come
    after training, when the centroid's means exist.
    """

    TAG = "train/class_means"

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        writer = tensorboard_writer(trainer)
        if writer is None:
            return
        means = pl_module.class_means() if hasattr(pl_module, "class_means") else self._from_data(trainer, pl_module)
        if means is not None:
            writer.add_image(self.TAG, digit_grid(means.clamp(0, 1)), trainer.global_step, dataformats="CHW")

    @staticmethod
    def _from_data(trainer: Trainer, pl_module: LightningModule) -> Optional[torch.Tensor]:
        split = training_split(trainer)
        if split is None:
            return None
        images, labels = split
        means = torch.zeros(pl_module.num_classes, 1, *images.shape[1:])
        for k in range(pl_module.num_classes):
            members = images[labels == k]  # one class at a time: never all 60,000 images as floats at once
            if len(members):
                means[k, 0] = members.float().mean(0) / 255
        return means
