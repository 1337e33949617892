"""`digitlab report [LOG_DIR ...]`: one table comparing the runs of a log folder, read from what each run saved.

A run is a folder holding TensorBoard event files (``lightning_logs/version_N/``). Per run:

- model, lr, batch size: its ``config.yaml`` (``model.class_path``; ``model.init_args.lr`` or the optimizer's
  ``lr``; ``data.batch_size``, per process);
- best ``val/acc``, ``test/acc`` (the last one logged) and wall time: its event files; the wall time runs from
  the first to the last event, so it covers fitting and the test after it, not start-up or data loading;
- epochs and parameters: its newest checkpoint (``last.ckpt`` if there is one), loaded weights-only: the fit
  loop's count of finished epochs, and the number of values in the ``state_dict`` (parameters and buffers:
  the centroid model's class means count).

Nothing is written into the run folders. Torch is imported only to read checkpoints; matplotlib only for
``--plot``.
"""

from __future__ import annotations

import argparse
import csv
import io
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

from digitlab.errors import UserError

EVENTS = "events.out.tfevents.*"


@dataclass
class Run:
    """What the report shows of one run; None where the run did not save it."""

    version: str
    model: Optional[str] = None
    lr: Optional[float] = None
    batch_size: Optional[int] = None
    epochs: Optional[int] = None
    best_val_acc: Optional[float] = None
    test_acc: Optional[float] = None
    wall_time_s: Optional[float] = None
    params: Optional[int] = None
    val_acc_curve: list[tuple[int, float]] = field(default_factory=list)  # (epoch, val/acc), epochs from 1


def _text(value: Any) -> str:
    return str(value)


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    hours, minutes = divmod(seconds // 60, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{seconds % 60:02d}s" if minutes else f"{seconds}s"


# (key: CSV header and --sort name, title: table header, format for the table and markdown, numeric)
COLUMNS: list[tuple[str, str, Callable[[Any], str], bool]] = [
    ("version", "version", _text, False),
    ("model", "model", _text, False),
    ("lr", "lr", "{:g}".format, True),
    ("batch_size", "batch size", _text, True),
    ("epochs", "epochs", _text, True),
    ("best_val_acc", "best val/acc", "{:.4f}".format, True),
    ("test_acc", "test/acc", "{:.4f}".format, True),
    ("wall_time_s", "wall time", _duration, True),
    ("params", "params", "{:,}".format, True),
]
KEYS = [key for key, *_ in COLUMNS]
DESCENDING = {"best_val_acc", "test_acc"}  # best first; every other column sorts in ascending order


def find_runs(log_dir: Path) -> list[Path]:
    """The folders under `log_dir` (itself included) that hold event files, in natural order (version_2 < 10)."""
    if not log_dir.is_dir():
        raise UserError(
            f"{log_dir} is not a folder. Give the folder that holds the runs (default: lightning_logs, where "
            "`digitlab fit` writes them), or train a model first: `digitlab fit --config configs/lenet5.yaml`."
        )
    runs = {path.parent for path in log_dir.rglob(EVENTS) if path.is_file()}
    return sorted(runs, key=lambda path: _natural(str(path)))


def read_run(path: Path, version: str) -> Run:
    run = Run(version=version)
    _read_config(path / "config.yaml", run)
    _read_events(path, run)
    _read_checkpoint(path / "checkpoints", run)
    return run


def _read_config(path: Path, run: Run) -> None:
    config = yaml.safe_load(path.read_text()) if path.is_file() else None
    if not isinstance(config, dict):
        return
    model = config.get("model")
    model = {"class_path": model} if isinstance(model, str) else model or {}
    if model.get("class_path"):
        run.model = str(model["class_path"]).rsplit(".", 1)[-1]
    init_args = model.get("init_args") or {}
    optimizer = init_args.get("optimizer")
    optimizer_args = (optimizer.get("init_args") or {}) if isinstance(optimizer, dict) else {}
    run.lr = init_args.get("lr", optimizer_args.get("lr"))
    run.batch_size = (config.get("data") or {}).get("batch_size")


def _read_events(path: Path, run: Run) -> None:
    # Imported when needed: every `digitlab` command imports this module at start-up.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars: dict[str, list[Any]] = {}
    start, end = float("inf"), float("-inf")
    for event_file in sorted(path.glob(EVENTS), key=lambda p: _natural(p.name)):
        events = EventAccumulator(str(event_file), size_guidance={"scalars": 0, "images": 1, "tensors": 1})
        events.Reload()
        tags = events.Tags()
        series = {tag: events.Scalars(tag) for tag in tags["scalars"]}
        for tag, values in series.items():
            scalars.setdefault(tag, []).extend(values)
        series.update({tag: events.Images(tag) for tag in tags["images"]})  # the newest image of each tag
        try:
            start = min(start, events.FirstEventTimestamp())
        except ValueError:  # an empty file: a run that stopped before writing anything
            continue
        end = max([end, *(event.wall_time for values in series.values() for event in values)])
    if end > start:
        run.wall_time_s = end - start
    if scalars.get("test/acc"):
        run.test_acc = scalars["test/acc"][-1].value
    val_acc = scalars.get("val/acc", [])
    if val_acc:
        run.best_val_acc = max(event.value for event in val_acc)
        epoch_at_step = {event.step: int(event.value) for event in scalars.get("epoch", [])}
        run.val_acc_curve = [(epoch_at_step.get(e.step, i) + 1, e.value) for i, e in enumerate(val_acc)]


def _read_checkpoint(folder: Path, run: Run) -> None:
    candidates = sorted(folder.glob("*.ckpt"), key=lambda p: (p.name == "last.ckpt", p.stat().st_mtime))
    if not candidates:
        return
    import torch

    try:
        checkpoint = torch.load(candidates[-1], map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # unreadable or not weights-only loadable: the columns stay empty, the report goes on
        return
    state = checkpoint.get("state_dict", {})
    run.params = sum(value.numel() for value in state.values() if isinstance(value, torch.Tensor))
    progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_progress", {}).get("total", {})
    if "processed" in progress:  # epochs whose batches all ran (a checkpoint at an epoch's end counts it)
        run.epochs = progress["processed"]
    elif "epoch" in checkpoint:
        run.epochs = checkpoint["epoch"] + 1


def sort_runs(runs: list[Run], key: str) -> list[Run]:
    """Runs sorted by column `key` (accuracies best first, the rest ascending), runs without it last."""
    ordered = sorted(runs, key=lambda run: _natural(run.version))
    present = [run for run in ordered if getattr(run, key) is not None]
    missing = [run for run in ordered if getattr(run, key) is None]
    return sorted(present, key=lambda run: _sortable(getattr(run, key)), reverse=key in DESCENDING) + missing


def format_runs(runs: list[Run], style: str) -> str:
    """The runs as an aligned ``table``, a ``markdown`` table, or ``csv`` (raw values, seconds)."""
    if style == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(KEYS)
        for run in runs:
            writer.writerow(["" if getattr(run, key) is None else getattr(run, key) for key in KEYS])
        return buffer.getvalue()
    titles = [title for _, title, _, _ in COLUMNS]
    rows = [[_cell(run, key, fmt) for key, _, fmt, _ in COLUMNS] for run in runs]
    numeric = [is_number for *_, is_number in COLUMNS]
    if style == "markdown":
        rule = ["---:" if is_number else "---" for is_number in numeric]
        return "".join(f"| {' | '.join(row)} |\n" for row in [titles, rule, *rows])
    widths = [max(len(row[i]) for row in [titles, *rows]) for i in range(len(titles))]
    lines = [
        "  ".join(cell.rjust(w) if is_number else cell.ljust(w) for cell, w, is_number in zip(row, widths, numeric))
        for row in [titles, *rows]
    ]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def plot_val_acc(runs: list[Run], path: Path) -> None:
    """Validation accuracy against epoch, one line per run with validation, saved as an image."""
    curves = [run for run in runs if run.val_acc_curve]
    if not curves:
        raise UserError(f"No run logged val/acc, so {path} was not written (runs with `data.val_split: 0` have "
                        "no validation).")
    if not path.parent.is_dir():
        raise UserError(f"--plot {path}: the folder {path.parent} does not exist.")
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(8, 5), dpi=120, layout="constrained")
    axes = figure.add_subplot()
    for run in curves:
        epochs, values = zip(*run.val_acc_curve)
        axes.plot(epochs, values, marker="o" if len(epochs) < 30 else None, label=f"{run.version} ({run.model})")
    axes.set(xlabel="epoch", ylabel="val/acc", title="Validation accuracy")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    figure.savefig(path)


def report_command(args: list[str]) -> None:
    """`digitlab report [LOG_DIR ...] [--format table|markdown|csv] [--sort KEY] [--plot FILE.png]`."""
    parser = argparse.ArgumentParser(
        prog="digitlab report",
        description="Compare runs: one row per run (a folder with TensorBoard event files) under each LOG_DIR, "
        "from its config.yaml, event files and newest checkpoint. Nothing is written into the runs.",
    )
    parser.add_argument("log_dirs", nargs="*", default=["lightning_logs"], metavar="LOG_DIR",
                        help="a folder of runs, one run's folder, or a sweep's folder (lightning_logs/sweeps/NAME: "
                        "its trials, best first) (default: lightning_logs)")
    parser.add_argument("--format", choices=["table", "markdown", "csv"], default="table",
                        help="plain table (default), markdown table, or CSV with raw values (wall time in seconds)")
    parser.add_argument("--sort", choices=KEYS, default="test_acc",
                        help="column to sort by (default: test_acc); accuracies best first, others ascending")
    parser.add_argument("--plot", type=Path, metavar="FILE.png",
                        help="also draw the runs' validation accuracy curves on one chart into this image file")
    options = parser.parse_args(args)

    from digitlab.sweep.report import is_sweep_folder, sweep_report  # a sweep's folder: its trials, best first

    sweeps = [Path(folder) for folder in options.log_dirs if is_sweep_folder(Path(folder))]
    for folder in sweeps:
        sys.stdout.write(sweep_report(folder, options.format))
    runs = []
    for log_dir in (Path(folder) for folder in options.log_dirs if Path(folder) not in sweeps):
        found = find_runs(log_dir)
        if not found:
            raise UserError(f"No runs in {log_dir}: no folder in it holds TensorBoard event files "
                            "(events.out.tfevents.*). Runs of `digitlab fit` are in lightning_logs/version_N/.")
        for path in found:
            if len(options.log_dirs) > 1:  # versions repeat across folders: show the paths
                label = path.as_posix()
            else:
                label = path.relative_to(log_dir).as_posix() if path != log_dir else path.name
            runs.append(read_run(path, label))
    if sweeps and not runs:
        return
    runs = sort_runs(runs, options.sort)
    sys.stdout.write(format_runs(runs, options.format))
    if options.plot is not None:
        plot_val_acc(runs, options.plot)
        print(f"Validation accuracy curves: {options.plot}", file=sys.stderr)


def _cell(run: Run, key: str, fmt: Callable[[Any], str]) -> str:
    value = getattr(run, key)
    return "—" if value is None else fmt(value)


def _natural(text: str) -> list:
    """Sort key in which numbers compare as numbers: version_2 before version_10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _sortable(value: Any) -> Any:
    return _natural(value) if isinstance(value, str) else value
