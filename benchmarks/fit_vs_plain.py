"""`digitlab fit` against the plain PyTorch loop a user would write, side by side in one run.

Same model, batch size, data, seed, batch order and number of steps; the two alternate, each in a fresh
process, at least three times. digitlab runs the shipped config as users run it (logging, progress bar,
checkpointing, validation); only the training steps of one epoch are timed, in both.

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
from lightning.pytorch import Callback

from common import DEFAULT_DATA, build, machine

CONFIGS = {"lenet5": "configs/lenet5.yaml", "mlp": "configs/mlp.yaml"}
TARGETS = {"lenet5": 1.05, "mlp": 1.3}


class TrainingStepTimer(Callback):
    """Wall time from the first training batch of epoch 0 to the end of its last one."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 0:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx + 1 == trainer.num_training_batches:
            self.seconds = time.perf_counter() - self.start


def run_digitlab(name: str, data_dir: str) -> dict:
    model, data, trainer = build(CONFIGS[name], "--data.data_dir", data_dir, "--trainer.max_epochs", "1")
    timer = TrainingStepTimer()
    trainer.callbacks.append(timer)
    trainer.fit(model, datamodule=data)
    return {"seconds": timer.seconds, "loss": trainer.callback_metrics["train/loss_epoch"].item(),
            "images": len(data.train_set)}


def run_plain(name: str, data_dir: str) -> dict:
    """The loop by hand: the same objects digitlab builds, the same order of images, no Lightning loop."""
    model, data, _ = build(CONFIGS[name], "--data.data_dir", data_dir, "--trainer.max_epochs", "1")
    data.setup("fit")
    images, labels = data.train_set.images, data.train_set.labels
    order = data.train_dataloader().batch_sampler.sampler.permutation()  # epoch 0's order, as in digitlab
    batch = data.hparams.batch_size
    steps = (len(order) + batch - 1) // batch
    optimizer, scheduler = plain_optimizer(model, steps)
    model.train()
    total = torch.zeros(())
    start = time.perf_counter()
    for step in range(steps):
        index = order[step * batch:(step + 1) * batch]
        x, y = images[index].unsqueeze(1).float().div_(255), labels[index]
        loss = model.loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total += loss.detach() * (len(y) if model.hparams.get("reduction", "mean") == "mean" else 1)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "loss": (total / len(order)).item(), "images": len(order)}


def plain_optimizer(model, steps: int):
    if "lr_schedule" not in model.hparams:  # LeNet-5: the optimizer of its config
        return model.configure_optimizers(), None
    from digitlab.models.mlp import GradientDescent

    hp = model.hparams
    optimizer = GradientDescent(model.parameters(), lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
    scheduler = None
    if hp.lr_schedule == "onecycle":
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=hp.lr, total_steps=steps,
                                                        cycle_momentum=False)
    return optimizer, scheduler


def child(args) -> None:
    torch.set_num_threads(args.threads)
    result = (run_plain if args.variant == "plain" else run_digitlab)(args.model, args.data_dir)
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
    print(f"{'model':<8} {'plain s/epoch':>13} {'digitlab s/epoch':>16} {'ratio':>6} {'target':>6} "
          f"{'plain img/s':>11} {'digitlab img/s':>14} {'plain RSS MB':>12} {'digitlab RSS MB':>15} "
          f"{'loss plain':>10} {'loss digitlab':>13}")
    failed = False
    for model in args.models:
        runs = {"plain": [], "digitlab": []}
        for _ in range(args.repeats):  # alternate, so that a noisy moment hurts both sides
            for variant in runs:
                runs[variant].append(measure(model, variant, args))
        seconds = {v: statistics.median(r["seconds"] for r in runs[v]) for v in runs}
        ratio = seconds["digitlab"] / seconds["plain"]
        images = runs["plain"][0]["images"]
        rss = {v: max(r["peak_rss_mb"] for r in runs[v]) for v in runs}
        loss = {v: runs[v][0]["loss"] for v in runs}
        failed |= ratio > TARGETS[model] or abs(loss["plain"] - loss["digitlab"]) > 1e-3 * abs(loss["plain"])
        print(f"{model:<8} {seconds['plain']:>13.2f} {seconds['digitlab']:>16.2f} {ratio:>6.2f} "
              f"{TARGETS[model]:>6.2f} {images / seconds['plain']:>11.0f} {images / seconds['digitlab']:>14.0f} "
              f"{rss['plain']:>12.0f} {rss['digitlab']:>15.0f} {loss['plain']:>10.4f} {loss['digitlab']:>13.4f}")
    print("all targets met, losses match" if not failed else "NOT MET: a ratio above its target or losses differ")


if __name__ == "__main__":
    main()
