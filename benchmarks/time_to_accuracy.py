"""Wall time until the official test accuracy first reaches a target: the seed recipes against digitlab's
fast ones. The test set is scored after every epoch (that scoring is not counted in the time).

    python benchmarks/time_to_accuracy.py [--recipes lenet5 lenet5_fast lenet5_fast_long lenet5_gpu mlp mlp_seed]
"""

from __future__ import annotations

import argparse
import time

import torch
from lightning.pytorch import Callback

from common import DEFAULT_DATA, build, machine

# name: (config, target, extra overrides, stop at the target?)
RECIPES = {
    "lenet5": ("configs/lenet5.yaml", 0.9858, (), False),  # run to its early stop: the reference time
    "lenet5_fast": ("configs/lenet5_fast.yaml", 0.9858, (), True),
    "lenet5_fast_long": ("configs/lenet5_fast.yaml", 0.990,
                         ("--trainer.max_epochs", "8", "--model.init_args.lr_scheduler.init_args.T_max", "8"), False),
    # benchmarks/gpu_check.sh: the long schedule on one GPU with the data sets on the device, stopped at 99 %.
    "lenet5_gpu": ("configs/lenet5_fast.yaml", 0.990,
                   ("--trainer.accelerator", "gpu", "--trainer.devices", "1", "--data.on_device", "true",
                    "--trainer.max_epochs", "8", "--model.init_args.lr_scheduler.init_args.T_max", "8"), True),
    "mlp": ("configs/mlp.yaml", 0.97, (), True),
    "mlp_seed": ("configs/mlp_seed.yaml", 0.97, (), False),
}


class TestAccuracyClock(Callback):
    """Scores the test set after each training epoch; training time excludes the scoring itself."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, target: float, stop: bool) -> None:
        self.images, self.labels, self.target, self.stop = images, labels, target, stop
        self.training_seconds = 0.0
        self.reached: tuple[float, int, float] | None = None
        self.accuracy = 0.0

    def on_train_epoch_start(self, trainer, pl_module):
        self.started = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)  # the epoch's queued GPU work belongs to its time
        self.training_seconds += time.perf_counter() - self.started
        pl_module.eval()
        with torch.no_grad():
            x = self.images.to(pl_module.device).unsqueeze(1).float().div_(255)
            predicted = torch.cat([pl_module(chunk).argmax(1) for chunk in x.split(2000)])
        pl_module.train()
        self.accuracy = (predicted.cpu() == self.labels).float().mean().item()
        if self.reached is None and self.accuracy >= self.target:
            self.reached = (self.training_seconds, trainer.current_epoch + 1, self.accuracy)
            trainer.should_stop = trainer.should_stop or self.stop


def run(name: str, data_dir: str) -> dict:
    config, target, overrides, stop = RECIPES[name]
    model, data, trainer = build(config, "--data.data_dir", data_dir, "--trainer.enable_progress_bar", "false",
                                 *overrides)
    data.setup("test")
    clock = TestAccuracyClock(data.test_set.images, data.test_set.labels, target, stop)
    trainer.callbacks.append(clock)
    trainer.fit(model, datamodule=data)
    return {"target": target, "reached": clock.reached, "total": clock.training_seconds,
            "epochs": trainer.current_epoch, "final": clock.accuracy}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", nargs="+", default=[name for name in RECIPES if name != "lenet5_gpu"],
                        choices=list(RECIPES))
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--data_dir", default=DEFAULT_DATA)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"Machine: {machine(args.threads)}")
    results = {name: run(name, args.data_dir) for name in args.recipes}
    print(f"{'recipe':<17} {'target':>6} {'seconds to target':>17} {'epochs':>6} {'training s':>10} {'final acc':>9}")
    for name, r in results.items():
        reached = f"{r['reached'][0]:>17.1f} {r['reached'][1]:>6}" if r["reached"] else f"{'not reached':>17} {'':>6}"
        print(f"{name:<17} {r['target']:>6.4f} {reached} {r['total']:>10.1f} {r['final']:>9.4f}")
    for fast, seed, share in (("lenet5_fast", "lenet5", 4), ("mlp", "mlp_seed", 50)):
        if fast in results and seed in results and results[fast]["reached"]:
            ratio = results[seed]["total"] / results[fast]["reached"][0]
            print(f"{fast}: reaches its target {ratio:.1f}x faster than {seed} trains (target: {share}x)")


if __name__ == "__main__":
    main()
