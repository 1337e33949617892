"""Time to accuracy of every shipped recipe, side by side: the wall time of the whole `digitlab fit` command
(start-up, data, training, validation, pictures, the test after fit) and the training time until val/acc first
reaches 0.99 and 0.995 (test-set-free milestones; validation and pictures are not counted). Each recipe runs
`--repeats` times, the recipes alternated (A B C A B C ...) so that a slow spell of the machine falls on all
of them; the table shows medians.

    python benchmarks/time_to_accuracy.py [--recipes bncnn lenet5_fast ...] [--repeats 3] [--seed 1]

A recipe is a shipped config run as a user runs it; `*_gpu` recipes add one GPU with the data on it
(benchmarks/gpu_check.sh runs them). The test accuracy printed by the command is shown too: it is the
checkpoint chosen by val/acc, scored once at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import DEFAULT_DATA, REPO, machine

GPU = ("--trainer.accelerator", "gpu", "--trainer.devices", "1", "--data.on_device", "true")
# name: (config, extra options)
RECIPES = {
    "centroid": ("configs/centroid.yaml", ()),
    "mlp": ("configs/mlp.yaml", ()),
    "mlp_seed": ("configs/mlp_seed.yaml", ()),
    "lenet5": ("configs/lenet5.yaml", ()),
    "lenet5_fast": ("configs/lenet5_fast.yaml", ()),
    "lenet5_fast_long": ("configs/lenet5_fast.yaml",
                         ("--trainer.max_epochs", "8", "--model.init_args.lr_scheduler.init_args.T_max", "8")),
    "bncnn": ("configs/bncnn.yaml", ()),
    "lenet5_gpu": ("configs/lenet5_fast.yaml",
                   (*GPU, "--trainer.max_epochs", "8", "--model.init_args.lr_scheduler.init_args.T_max", "8")),
    "bncnn_gpu": ("configs/bncnn.yaml", GPU),
}
CPU_DEFAULT = ["centroid", "mlp", "lenet5", "lenet5_fast", "bncnn"]  # mlp_seed's 3000 epochs: on request
MILESTONES = (0.99, 0.995)


def run_once(name: str, data_dir: str, seed: int, folder: Path) -> dict:
    """One whole `digitlab fit` of the recipe in a new folder: its wall time, milestones and test accuracy."""
    config, extra = RECIPES[name]
    folder.mkdir(parents=True)
    clock = folder / "milestones.json"
    callback = (f"--trainer.callbacks+={{class_path: milestones.MilestoneClock, init_args: {{path: '{clock}', "
                f"milestones: {list(MILESTONES)}}}}}")
    command = [sys.executable, "-m", "digitlab", "fit", "--config", str(REPO / config), "--data.data_dir", data_dir,
               "--seed_everything", str(seed), "--trainer.enable_progress_bar", "false", *extra, callback]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    started = time.perf_counter()
    result = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{name} failed:\n{result.stderr[-3000:]}")
    clocked = json.loads(clock.read_text()) if clock.is_file() else {"reached": {}, "training_seconds": 0.0}
    test = float(result.stdout.split("Test accuracy:")[1].split()[0]) if "Test accuracy:" in result.stdout else None
    return {"wall": wall, "test": test, "training": clocked["training_seconds"],
            **{m: clocked["reached"].get(str(m)) for m in MILESTONES}}


def median_or_none(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summary(name: str, runs: list[dict]) -> str:
    cells = [f"{statistics.median(r['wall'] for r in runs):>8.1f}"]
    for milestone in MILESTONES:
        reached = [r[milestone] for r in runs]
        seconds = median_or_none([r["seconds"] if r else None for r in reached])
        count = sum(r is not None for r in reached)
        cell = f"{seconds:.1f} ({count}/{len(runs)})" if seconds is not None else f"- (0/{len(runs)})"
        cells.append(f"{cell:>{len(f'to {milestone} (reached)')}}")
    cells.append(f"{statistics.median(r['training'] for r in runs):>8.1f}")
    test = median_or_none([r["test"] for r in runs])
    cells.append(f"{test:.4f}" if test is not None else "-")
    return f"{name:<17} " + "  ".join(cells)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", nargs="+", default=CPU_DEFAULT, choices=list(RECIPES))
    parser.add_argument("--repeats", type=int, default=3, help="runs of each recipe, alternated (default 3)")
    parser.add_argument("--seed", type=int, default=1, help="seed_everything of the first repeat; +1 for each next")
    parser.add_argument("--data_dir", default=DEFAULT_DATA)
    args = parser.parse_args()
    print(f"Machine: {machine(int(os.environ.get('OMP_NUM_THREADS', 0)) or os.cpu_count())}; "
          f"load average at start {os.getloadavg()[0]:.2f}")
    results: dict[str, list[dict]] = {name: [] for name in args.recipes}
    with tempfile.TemporaryDirectory() as work:
        for repeat in range(args.repeats):
            for name in args.recipes:
                results[name].append(run_once(name, args.data_dir, args.seed + repeat,
                                              Path(work) / f"{name}-{repeat}"))
                print(f"  {name} repeat {repeat + 1}: {results[name][-1]['wall']:.1f} s", file=sys.stderr, flush=True)
    print(f"load average at end {os.getloadavg()[0]:.2f}; medians of {args.repeats} alternated runs")
    header = f"{'recipe':<17} {'whole s':>8}  {'to 0.99 (reached)':>17}  {'to 0.995 (reached)':>18}  " \
             f"{'train s':>8}  test acc"
    print(header)
    for name, runs in results.items():
        print(summary(name, runs))


if __name__ == "__main__":
    main()
