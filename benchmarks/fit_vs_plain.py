"""`digitlab fit` against the plain PyTorch loop a user would write, side by side in one run.

Same model, batch size, data, seed, batch order and number of steps; the variants alternate, each in a
fresh process, at least three times. digitlab runs the shipped config as users run it (logging, progress
bar, checkpointing, validation); only the training steps of one epoch are timed, in every variant.

A third variant, "Lightning floor", runs the same steps through a bare LightningModule and a Trainer with
no logger, callback, progress bar or checkpoint: what Lightning's loop costs before digitlab adds anything.

    python benchmarks/fit_vs_plain.py [--repeats 3] [--threads N] [--data_dir DIR]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer

from common import DEFAULT_DATA, build, machine

CONFIGS = {"lenet5": "configs/lenet5.yaml", "mlp": "configs/mlp.yaml"}
TARGETS = {"lenet5": 1.05, "mlp": 1.3}
VARIANTS = ("plain", "floor", "digitlab")


class TrainingStepTimer(Callback):
    """Wall time from the first training batch of epoch 0 to the end of its last one."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 0:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx + 1 == trainer.num_training_batches:
            self.seconds = time.perf_counter() - self.start


class Steps:
    """What every variant trains: the model, data and batch order that `digitlab fit --config` builds."""

    def __init__(self, name: str, data_dir: str) -> None:
        self.model, self.data, self.trainer = build(CONFIGS[name], "--data.data_dir", data_dir,
                                                    "--trainer.max_epochs", "1")
        self.data.setup("fit")
        self.images, self.labels = self.data.train_set.images, self.data.train_set.labels
        self.order = self.data.train_dataloader().sampler.sampler.permutation()  # epoch 0's order
        self.batch_size = self.data.hparams.batch_size
        self.steps = (len(self.order) + self.batch_size - 1) // self.batch_size
        self.total_loss = torch.zeros(())

    def optimizers(self):
        """The optimizer (and per-step schedule) the model's config asks for, built by hand."""
        model = self.model
        if "lr_schedule" not in model.hparams:  # LeNet-5: the optimizer of its config
            return model.configure_optimizers(), None
        from digitlab.models.mlp import GradientDescent

        hp = model.hparams
        optimizer = GradientDescent(model.parameters(), lr=hp.lr, momentum=hp.momentum,
                                    weight_decay=hp.weight_decay)
        scheduler = None
        if hp.lr_schedule == "onecycle":
            scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=hp.lr, total_steps=self.steps,
                                                            cycle_momentum=False)
        return optimizer, scheduler

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        # The same gather as digitlab's data set (index_select; images[index] is slower on a CPU).
        index = self.order[step * self.batch_size:(step + 1) * self.batch_size]
        return self.images.index_select(0, index).unsqueeze(1).float().div_(255), self.labels.index_select(0, index)

    def add_loss(self, loss: torch.Tensor, batch_images: int) -> None:
        per_image = self.model.hparams.get("reduction", "mean") == "mean"
        self.total_loss += loss.detach() * (batch_images if per_image else 1)

    def result(self, seconds: float) -> dict:
        return {"seconds": seconds, "loss": (self.total_loss / len(self.order)).item(), "images": len(self.order)}


def run_digitlab(name: str, data_dir: str) -> dict:
    steps = Steps(name, data_dir)
    timer = TrainingStepTimer()
    steps.trainer.callbacks.append(timer)
    steps.trainer.fit(steps.model, datamodule=steps.data)
    return {"seconds": timer.seconds, "loss": steps.trainer.callback_metrics["train/loss_epoch"].item(),
            "images": len(steps.order)}


def run_plain(name: str, data_dir: str) -> dict:
    """The loop by hand: the same objects digitlab builds, the same order of images, no Lightning loop."""
    steps = Steps(name, data_dir)
    model = steps.model
    optimizer, scheduler = steps.optimizers()
    model.train()
    start = time.perf_counter()
    for step in range(steps.steps):
        x, y = steps.batch(step)
        loss = model.loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        steps.add_loss(loss, len(y))
    return steps.result(time.perf_counter() - start)


class BareModule(LightningModule):
    """The model's forward, loss and optimizer in the least a LightningModule needs; no logging, no metric."""

    def __init__(self, steps: Steps) -> None:
        super().__init__()
        self.steps = steps
        self.net = steps.model
        self.manual = not steps.model.automatic_optimization
        self.automatic_optimization = not self.manual

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = self.net.loss(self.net(x), y)
        self.steps.add_loss(loss, len(y))
        if not self.manual:
            return loss
        optimizer = self.optimizers()
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()
        self.lr_schedulers().step()

    def configure_optimizers(self):
        optimizer, scheduler = self.steps.optimizers()
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def run_floor(name: str, data_dir: str) -> dict:
    """The same steps through Lightning's loop with nothing of digitlab's: no logger, callback or checkpoint."""
    steps = Steps(name, data_dir)
    loader = steps.data.train_dataloader()

    class Batches(LightningDataModule):
        def train_dataloader(self):
            return loader

        on_after_batch_transfer = steps.data.on_after_batch_transfer  # uint8 -> [0, 1] floats, as digitlab

    timer = TrainingStepTimer()
    trainer = Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, callbacks=[timer])
    trainer.fit(BareModule(steps), datamodule=Batches())
    return steps.result(timer.seconds)


def child(args) -> None:
    torch.set_num_threads(args.threads)
    run = {"plain": run_plain, "floor": run_floor, "digitlab": run_digitlab}[args.variant]
    result = run(args.model, args.data_dir)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result))


def measure(model: str, variant: str, args) -> dict:
    command = [sys.executable, __file__, "--child", "--model", model, "--variant", variant,
               "--threads", str(args.threads), "--data_dir", args.data_dir]
    out = subprocess.run(command, capture_output=True, text=True, check=False)
    line = next((l for l in out.stdout.splitlines() if l.startswith("RESULT ")), None)
    if line is None:
        sys.exit(f"{variant} {model} failed:\n{out.stderr[-3000:]}")
    return json.loads(line[len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--data_dir", default=DEFAULT_DATA)
    parser.add_argument("--models", nargs="+", default=list(CONFIGS))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    print(f"Machine: {machine(args.threads)}")
    print(f"{'model':<8} {'plain s/epoch':>13} {'floor s/epoch':>13} {'digitlab s/epoch':>16} {'floor/plain':>11} "
          f"{'ratio':>6} {'target':>6} {'digitlab img/s':>14} {'RSS MB plain/floor/digitlab':>27} "
          f"{'loss plain/floor/digitlab':>26}")
    failed = False
    for model in args.models:
        runs = {variant: [] for variant in VARIANTS}
        for _ in range(args.repeats):  # alternate, so that a noisy moment hurts every variant
            for variant in runs:
                runs[variant].append(measure(model, variant, args))
        seconds = {v: statistics.median(r["seconds"] for r in runs[v]) for v in runs}
        ratio = seconds["digitlab"] / seconds["plain"]
        images = runs["plain"][0]["images"]
        rss = "/".join(f"{max(r['peak_rss_mb'] for r in runs[v]):.0f}" for v in VARIANTS)
        loss = {v: runs[v][0]["loss"] for v in runs}
        same_loss = all(abs(loss[v] - loss["plain"]) <= 1e-3 * abs(loss["plain"]) for v in VARIANTS)
        failed |= ratio > TARGETS[model] or not same_loss
        print(f"{model:<8} {seconds['plain']:>13.3f} {seconds['floor']:>13.3f} {seconds['digitlab']:>16.3f} "
              f"{seconds['floor'] / seconds['plain']:>11.2f} {ratio:>6.2f} {TARGETS[model]:>6.2f} "
              f"{images / seconds['digitlab']:>14.0f} {rss:>27} "
              f"{'/'.join(f'{loss[v]:.4f}' for v in VARIANTS):>26}")
        print("         every run, s: " + "; ".join(
            f"{v} " + " ".join(f"{r['seconds']:.3f}" for r in runs[v]) for v in VARIANTS))
    print("all targets met, losses match" if not failed else "NOT MET: a ratio above its target or losses differ")


if __name__ == "__main__":
    main()
