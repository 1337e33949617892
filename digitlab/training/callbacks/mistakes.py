"""TensorBoard picture `test/mistakes`: the test images predicted wrong with the highest confidence."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from digitlab.training.callbacks.context import step_outputs, tensorboard_writer
from digitlab.training.callbacks.drawing import captioned_digits_image
from digitlab.batch import PAD_LABEL


class WorstMistakes(Callback):
    """Log the `count` most confident wrong test predictions, captioned ``true 7, pred 2`` and the predicted
    class's softmax probability, as ``test/mistakes`` (most confident first; nothing when all are right).

    Each process keeps its own top `count` while testing (a few tensors, no image list); at the end all
    processes gather them and rank 0 draws the global top `count`.

    Args:
        count: How many mistakes to show.
    """

    TAG = "test/mistakes"

    def __init__(self, count: int = 16) -> None:
        self.count = count

    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # A fixed size on every process, so that they can be gathered; confidence -1 marks an empty slot.
        device = pl_module.device
        self.worst = {
            "confidence": torch.full((self.count,), -1.0, device=device),
            "target": torch.zeros(self.count, dtype=torch.long, device=device),
            "predicted": torch.zeros(self.count, dtype=torch.long, device=device),
            "image": None,  # [count, 1, H, W], allocated at the first batch, when the image size is known
        }

    def on_test_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        predictions = step_outputs(outputs)
        if predictions is None:
            return
        logits, targets = predictions
        images = batch[0]
        if self.worst["image"] is None:
            self.worst["image"] = images.new_zeros(self.count, *images.shape[1:])
        confidence, predicted = logits.float().softmax(dim=1).max(dim=1)
        wrong = (predicted != targets) & (targets != PAD_LABEL)
        candidates = {
            "confidence": confidence[wrong], "target": targets[wrong], "predicted": predicted[wrong],
            "image": images[wrong],
        }
        self.worst = _top(
            {key: torch.cat([self.worst[key], candidates[key].to(self.worst[key].dtype)]) for key in self.worst},
            self.count,
        )

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.worst["image"] is None:  # no batch had outputs to use (the same on every process)
            return
        gathered = pl_module.all_gather(self.worst)  # every process takes part
        # [processes, count, ...] when distributed (even with one process), as it was otherwise.
        gathered = {key: value.flatten(0, 1) if value.dim() > self.worst[key].dim() else value
                    for key, value in gathered.items()}
        writer = tensorboard_writer(trainer)
        if writer is None:
            return
        worst = _top(gathered, self.count)
        found = worst["confidence"] >= 0
        if not found.any():
            return
        captions = [
            f"true {t}, pred {p}\n{c:.1%}"
            for t, p, c in zip(worst["target"][found].tolist(), worst["predicted"][found].tolist(),
                               worst["confidence"][found].tolist())
        ]
        image = captioned_digits_image(worst["image"][found], captions)
        writer.add_image(self.TAG, image, trainer.global_step, dataformats="CHW")


def _top(candidates: dict[str, torch.Tensor], count: int) -> dict[str, torch.Tensor]:
    """The `count` candidates of highest confidence, most confident first."""
    order = candidates["confidence"].argsort(descending=True, stable=True)[:count]
    return {key: value[order] for key, value in candidates.items()}
