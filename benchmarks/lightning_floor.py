"""The Lightning floor of benchmarks/whole_epochs.py: plain_loop.py's network, recipe, batches and validation,
run by a bare LightningModule and a Trainer with no logger, callback, progress bar, checkpoint or summary.

What Lightning's own loop costs before digitlab adds anything. The MLP's step is manual optimization
(`manual_backward`, then the optimizer and schedule), as in digitlab's model; LeNet-5's is automatic.

    python benchmarks/lightning_floor.py --model lenet5 --epochs 6 [--data_dir DIR] [--first_step]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule, Trainer

import plain_loop as plain


class Batches:
    """An iterable with a length, which Lightning takes as a data loader: a new iterator from `make` each time."""

    def __init__(self, make, count: int) -> None:
        self.make, self.count = make, count

    def __len__(self) -> int:
        return self.count

    def __iter__(self):
        return iter(self.make())


class BareModule(LightningModule):
    def __init__(self, model: str, data, epochs: int, first_step: bool) -> None:
        super().__init__()
        self.net, self.optimizer, self.scheduler, self.train_set, self.val_set = plain.build(model, data, epochs)
        self.batch_size = plain.BATCH[model]
        self.automatic_optimization = model != "mlp"
        self.first_step = first_step

    def training_step(self, batch, batch_idx):
        if self.first_step:
            print(f"FIRST_STEP {time.time()}", flush=True)
            os._exit(0)
        images, labels = batch
        loss = F.cross_entropy(self.net(plain.as_input(images)), labels)
        if self.automatic_optimization:
            return loss
        optimizer = self.optimizers()
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()
        self.lr_schedulers().step()

    def on_validation_epoch_start(self) -> None:
        self.correct, self.loss_sum = torch.zeros(()), torch.zeros(())

    def validation_step(self, batch, batch_idx):
        images, labels = batch
        logits = self.net(plain.as_input(images))
        self.correct += (logits.argmax(1) == labels).sum()
        self.loss_sum += F.cross_entropy(logits, labels, reduction="sum")

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            count = len(self.val_set[1])
            print(f"epoch {self.current_epoch}: val/acc {self.correct.item() / count:.4f} "
                  f"val/loss {self.loss_sum.item() / count:.4f}")

    def configure_optimizers(self):
        if self.scheduler is None:
            return self.optimizer
        return {"optimizer": self.optimizer, "lr_scheduler": {"scheduler": self.scheduler, "interval": "step"}}

    def train_dataloader(self):
        # plain_loop's shuffled batches of the current epoch
        return Batches(lambda: plain.batches(*self.train_set, self.batch_size, self.current_epoch),
                       -(-len(self.train_set[1]) // self.batch_size))

    def val_dataloader(self):
        images, labels = self.val_set
        starts = range(0, len(labels), plain.EVAL_BATCH)
        return Batches(lambda: ((images[i:i + plain.EVAL_BATCH], labels[i:i + plain.EVAL_BATCH]) for i in starts),
                       len(starts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["lenet5", "mlp"], required=True)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--data_dir", type=Path, default=plain.DEFAULT_DATA)
    parser.add_argument("--first_step", action="store_true")
    args = parser.parse_args()
    data = plain.load(args.data_dir)
    module = BareModule(args.model, data, args.epochs, args.first_step)
    trainer = Trainer(max_epochs=args.epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module)
    print(f"Test accuracy: {plain.evaluate(module.net, data[2], data[3])[0]:.4f}")


if __name__ == "__main__":
    main()
