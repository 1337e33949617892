"""What users feel: whole epochs and whole commands, timed from outside, `digitlab fit` against plain PyTorch.

1. Per epoch. Each variant runs as a whole process for 1 epoch and for K epochs; the time of an epoch is
   (T[K] - T[1]) / (K - 1): training, validation, checkpoints, logging, pictures, everything that repeats.
   - plain: benchmarks/plain_loop.py, the loop a user writes by hand (validation every epoch on the same
     5,000 images, batches of 1,000 under no_grad);
   - floor: benchmarks/lightning_floor.py, the same in a bare LightningModule and Trainer (no logger or
     callback): what Lightning itself costs;
   - digitlab: `digitlab fit` with the shipped config as users run it (LeNet-5: `configs/lenet5.yaml
     --data.val_split 5000`, the seed config with plain's split size; MLP: `configs/mlp.yaml`).
2. Whole commands, start to exit: `digitlab fit --config configs/centroid.yaml` against the floor of any
   Lightning program (plain_loop.py's centroid plus `import lightning.pytorch`) and the plain centroid; then
   the time from start to the first training step of LeNet-5, and `digitlab --help`.

Variants alternate, so that a noisy moment hurts all of them; medians are printed, then every run.

    python benchmarks/whole_epochs.py [--repeats 3] [--startup_repeats 5] [--models lenet5 mlp] [--data_dir DIR]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lightning.pytorch import Callback

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DIGITLAB = str(Path(sys.executable).with_name("digitlab"))
PYTHON = sys.executable
CONFIGS = {"lenet5": ["configs/lenet5.yaml", "--data.val_split", "5000"], "mlp": ["configs/mlp.yaml"]}
EPOCHS = {"lenet5": 6, "mlp": 8}  # K: the 6 for LeNet-5; the MLP recipe's own 8 epochs
VARIANTS = ("plain", "floor", "digitlab")
TARGETS = {("lenet5", "plain"): 1.05, ("mlp", "plain"): 1.3, ("mlp", "floor"): 1.1, ("centroid", "floor"): 1.1}


class FirstStepClock(Callback):
    """Prints the wall-clock time when the first training step starts, then ends the process at once (added to
    `digitlab fit` by this script)."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        print(f"FIRST_STEP {time.time()}", flush=True)
        os._exit(0)


def command(model: str, variant: str, epochs: int, data_dir: str) -> list[str]:
    if variant == "digitlab":
        config, *options = CONFIGS[model]
        return [DIGITLAB, "fit", "--config", str(REPO / config), *options, "--data.data_dir", data_dir,
                "--trainer.max_epochs", str(epochs)]
    script = "plain_loop.py" if variant == "plain" else "lightning_floor.py"
    return [PYTHON, str(HERE / script), "--model", model, "--epochs", str(epochs), "--data_dir", data_dir]


def timed(args: list[str], check: str | None = None) -> tuple[float, str]:
    """Wall seconds of one whole process started from here (in a fresh folder, removed after), and its output."""
    folder = tempfile.mkdtemp(prefix="whole_epochs_")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))}
    try:
        start = time.perf_counter()
        out = subprocess.run(args, cwd=folder, env=env, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - start
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    output = out.stdout + out.stderr
    if out.returncode != 0 or (check is not None and check not in output):
        sys.exit(f"failed ({out.returncode}): {' '.join(args)}\n{output[-3000:]}")
    return seconds, output


def first_step_seconds(args: list[str]) -> float:
    start = time.time()
    _, output = timed(args)
    return float(re.search(r"FIRST_STEP (\S+)", output).group(1)) - start


def test_accuracy(output: str) -> str:
    found = re.findall(r"Test accuracy: (\S+)", output)
    return found[-1] if found else "?"


def ratio_line(name: str, seconds: dict[str, float]) -> str:
    parts = []
    for reference in ("plain", "floor"):
        target = TARGETS.get((name, reference))
        ratio = seconds["digitlab"] / seconds[reference]
        verdict = "" if target is None else f" (target <= {target}: {'met' if ratio <= target else 'NOT MET'})"
        parts.append(f"digitlab/{reference} {ratio:.2f}{verdict}")
    return f"{name}: " + "; ".join(parts)


def per_epoch(args) -> list[str]:
    verdicts = []
    print(f"{'model':<7} {'K':>2} {'plain s/epoch':>13} {'floor s/epoch':>13} {'digitlab s/epoch':>16} "
          f"{'floor/plain':>11} {'digitlab/plain':>14} {'digitlab/floor':>14}  test acc after K plain/floor/digitlab")
    for model in args.models:
        epochs = args.epochs or EPOCHS[model]
        runs = {variant: [] for variant in VARIANTS}
        accuracy = {}
        for repeat in range(args.repeats):
            for variant in VARIANTS:
                order = (1, epochs) if repeat % 2 == 0 else (epochs, 1)
                times = {}
                for k in order:
                    check = f"max_epochs={k}` reached" if variant != "plain" else None
                    times[k], output = timed(command(model, variant, k, args.data_dir), check)
                    if k == epochs:
                        accuracy[variant] = test_accuracy(output)
                runs[variant].append((times[epochs] - times[1]) / (epochs - 1))
        seconds = {v: statistics.median(runs[v]) for v in VARIANTS}
        print(f"{model:<7} {epochs:>2} {seconds['plain']:>13.3f} {seconds['floor']:>13.3f} {seconds['digitlab']:>16.3f} "
              f"{seconds['floor'] / seconds['plain']:>11.2f} {seconds['digitlab'] / seconds['plain']:>14.2f} "
              f"{seconds['digitlab'] / seconds['floor']:>14.2f}  {'/'.join(accuracy[v] for v in VARIANTS)}")
        print("        every run, s/epoch: " + "; ".join(f"{v} " + " ".join(f"{s:.3f}" for s in runs[v]) for v in VARIANTS))
        verdicts.append(ratio_line(model, seconds))
    return verdicts


def startup(args) -> list[str]:
    centroid = {
        "plain": [PYTHON, str(HERE / "plain_loop.py"), "--model", "centroid", "--data_dir", args.data_dir],
        "floor": [PYTHON, str(HERE / "plain_loop.py"), "--model", "centroid", "--import_lightning",
                  "--data_dir", args.data_dir],
        "digitlab": [DIGITLAB, "fit", "--config", str(REPO / "configs/centroid.yaml"), "--data.data_dir", args.data_dir],
    }
    first_step = {
        "plain": command("lenet5", "plain", 1, args.data_dir) + ["--first_step"],
        "floor": command("lenet5", "floor", 1, args.data_dir) + ["--first_step"],
        "digitlab": command("lenet5", "digitlab", 1, args.data_dir)
        + ["--trainer.callbacks+=whole_epochs.FirstStepClock"],
    }
    whole = {v: [] for v in VARIANTS}
    first = {v: [] for v in VARIANTS}
    help_seconds = []
    for _ in range(args.startup_repeats):
        for variant in VARIANTS:
            seconds, output = timed(centroid[variant], "Test accuracy: 0.8203")
            whole[variant].append(seconds)
            first[variant].append(first_step_seconds(first_step[variant]))
        help_seconds.append(timed([DIGITLAB, "--help"])[0])
    whole_median = {v: statistics.median(whole[v]) for v in VARIANTS}
    first_median = {v: statistics.median(first[v]) for v in VARIANTS}
    print(f"\n{'start to exit, s':<44} {'plain':>6} {'floor':>6} {'digitlab':>8} {'digitlab/floor':>14}")
    print(f"{'centroid (digitlab fit --config centroid.yaml)':<44} {whole_median['plain']:>6.2f} "
          f"{whole_median['floor']:>6.2f} {whole_median['digitlab']:>8.2f} "
          f"{whole_median['digitlab'] / whole_median['floor']:>14.2f}")
    print(f"{'LeNet-5: start to the first training step':<44} {first_median['plain']:>6.2f} "
          f"{first_median['floor']:>6.2f} {first_median['digitlab']:>8.2f} "
          f"{first_median['digitlab'] / first_median['floor']:>14.2f}")
    print(f"{'digitlab --help':<44} {'':>6} {'':>6} {statistics.median(help_seconds):>8.2f}")
    print("        every run, s: " + "; ".join(
        f"{what} {v} " + " ".join(f"{s:.2f}" for s in runs[v]) for what, runs in (("centroid", whole), ("first step", first))
        for v in VARIANTS))
    return [ratio_line("centroid", whole_median)]


def main() -> None:
    from common import DEFAULT_DATA, machine

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--startup_repeats", type=int, default=5)
    parser.add_argument("--models", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--epochs", type=int, help="K for every model (default: 6 for LeNet-5, 8 for the MLP)")
    parser.add_argument("--no_startup", action="store_true", help="only the per-epoch table")
    parser.add_argument("--data_dir", default=DEFAULT_DATA)
    args = parser.parse_args()
    import torch

    print(f"Machine: {machine(torch.get_num_threads())}; load average before: {os.getloadavg()[0]:.2f}")
    verdicts = per_epoch(args) if args.models else []
    if not args.no_startup:
        verdicts += startup(args)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print("\n".join(verdicts))
    if any("NOT MET" in line for line in verdicts):
        print("NOT MET: a ratio above its target")


if __name__ == "__main__":
    main()
