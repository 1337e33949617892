"""`digitlab report [LOG_DIR ...]`: one table comparing the runs of a log folder, read from what each run saved.

A run is a folder holding TensorBoard event files or a CSV logger's ``metrics.csv`` (``lightning_logs/version_N/``).
An evaluation of a run's checkpoint (`digitlab validate|test|predict`) is a folder inside that run
(``version_N/test_0``): its row says what it is (``kind``), the ``checkpoint`` it evaluated (its config.yaml's
``ckpt_path``) and its own results, and it is listed right below its run. Per run or evaluation:

- model, lr, batch size: its ``config.yaml`` (``model.class_path``; ``model.init_args.lr`` or the optimizer's
  ``lr``; ``data.batch_size``, per process);
- best ``val/acc``, ``test/acc`` (the last one logged) and wall time: its event files, else its metrics.csv; the
  wall time runs from the first to the last event (for metrics.csv: from config.yaml's to metrics.csv's last
  write), so it covers fitting and the test after it, not start-up or data loading;
- epochs and parameters: its newest checkpoint (``last.ckpt`` if there is one; for an evaluation, the
  checkpoint it evaluated), loaded weights-only: the fit loop's count of finished epochs, and the number of
  values in the ``state_dict`` (parameters and buffers: the centroid model's class means count).

Nothing is written into the run folders. One bad run never stops the report: a config.yaml that is not a
readable config leaves that run's model, lr and batch size blank, with a one-line warning naming it, and only
regular files are read (a FIFO named like an event file would block). Torch is imported only to read
checkpoints; matplotlib only for ``--plot``.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

from digitlab.config.bounded_yaml import check_size
from digitlab.errors import SkippedFileWarning, UserError
from digitlab.runs.layout import EVALUATION_FOLDER
from digitlab.utils.atomic import atomic_write

EVENTS = "events.out.tfevents.*"
METRICS_CSV = "metrics.csv"  # Lightning's CSVLogger


@dataclass
class Run:
    """What the report shows of one run; None where the run did not save it."""

    version: str
    kind: str = "fit"  # or the evaluation: validate, test, predict
    checkpoint: Optional[str] = None  # the checkpoint an evaluation evaluated
    model: Optional[str] = None
    lr: Optional[float] = None
    batch_size: Optional[int] = None
    epochs: Optional[int] = None
    best_val_acc: Optional[float] = None
    test_acc: Optional[float] = None
    wall_time_s: Optional[float] = None
    params: Optional[int] = None
    val_acc_curve: list[tuple[int, float]] = field(default_factory=list)  # (epoch, val/acc), epochs from 1
    of: Optional[str] = None  # an evaluation's run (its `version`), when that run is in the report


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
    ("kind", "kind", _text, False),
    ("checkpoint", "checkpoint", _text, False),
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
    """The folders under `log_dir` (itself included) that hold event files or a metrics.csv, in natural order
    (version_2 < 10)."""
    if not log_dir.is_dir():
        raise UserError(
            f"{log_dir} is not a folder. Give the folder that holds the runs (default: lightning_logs, where "
            "`digitlab fit` writes them), or train a model first: `digitlab fit --config configs/lenet5.yaml`."
        )
    runs = {path.parent for pattern in (EVENTS, METRICS_CSV) for path in log_dir.rglob(pattern) if path.is_file()}
    return sorted(runs, key=lambda path: _natural(str(path)))


def read_run(path: Path, version: str) -> Run:
    evaluation = EVALUATION_FOLDER.fullmatch(path.name)
    run = Run(version=version, kind=evaluation.group(1) if evaluation else "fit")
    ckpt_path = _read_config(path / "config.yaml", run)
    if _regular_files(path, EVENTS):
        _read_events(path, run)
    else:
        _read_metrics_csv(path, run)
    if not evaluation:
        _read_checkpoint(_newest_checkpoint(path / "checkpoints"), run)
    elif ckpt_path is not None:
        run.checkpoint, checkpoint = _evaluated_checkpoint(path, ckpt_path)
        _read_checkpoint(checkpoint, run)
    return run


def _evaluated_checkpoint(path: Path, ckpt_path: str) -> tuple[str, Path]:
    """How to show the checkpoint an evaluation at `path` evaluated, and where it is now. One of the run that
    holds the evaluation (``version_N/checkpoints/X.ckpt``) is named ``X.ckpt`` and looked for in that run,
    wherever the evaluation was started from; any other is shown and looked for as its config.yaml names it."""
    written = Path(ckpt_path)
    if written.parent.name == "checkpoints" and written.parent.parent.name == path.parent.name:
        return written.name, path.parent / "checkpoints" / written.name
    return ckpt_path, written


def _read_config(path: Path, run: Run) -> Optional[str]:
    """Model, lr and batch size from the run's config.yaml, and its ``ckpt_path`` (returned); left blank, with
    a warning, if it is not one."""
    if not path.is_file():
        return None
    try:
        text = path.read_text()
        check_size(text)  # an alias bomb would expand when a value is quoted below
        config = yaml.safe_load(text)
        run.model, run.lr, run.batch_size = _config_columns(config)
    except UnicodeDecodeError:
        _warn_config(path, "not text")
    except yaml.YAMLError as error:
        _warn_config(path, f"not a readable config ({str(error).splitlines()[0]})")
    except (OSError, ValueError) as error:
        _warn_config(path, str(error))
    else:
        ckpt_path = config.get("ckpt_path") if isinstance(config, dict) else None
        return ckpt_path if isinstance(ckpt_path, str) else None
    return None


def _config_columns(config: Any) -> tuple[Optional[str], Optional[float], Optional[int]]:
    """(model class name, lr, batch size) of a saved config; ValueError for a config not shaped like one."""
    config = _mapping(config, "the config")
    model = config.get("model")
    model = {"class_path": model} if isinstance(model, str) else _mapping(model, "its model section")
    class_path = model.get("class_path")
    if class_path is not None and not isinstance(class_path, str):
        raise ValueError(f"its model.class_path is {_short(class_path)}, not a name")
    init_args = _mapping(model.get("init_args"), "its model.init_args")
    optimizer = init_args.get("optimizer")
    optimizer = optimizer if isinstance(optimizer, dict) else {}  # a class path alone holds no lr
    optimizer_args = _mapping(optimizer.get("init_args"), "its optimizer's init_args")
    lr = _number(init_args.get("lr", optimizer_args.get("lr")), "lr", float)
    batch_size = _number(_mapping(config.get("data"), "its data section").get("batch_size"), "data.batch_size", int)
    return (class_path.rsplit(".", 1)[-1] if class_path else None), lr, batch_size


def _mapping(value: Any, what: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{what} is {_short(value)}, not a mapping of settings")
    return value


def _number(value: Any, name: str, kind: type) -> Any:
    """`value` as a `kind` number; PyYAML reads ``1e-3`` (no dot) as a string, which is converted here."""
    if value is None:
        return None
    try:
        if isinstance(value, bool):
            raise ValueError
        number = kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"its {name} is not a number: {_short(value)}") from None
    if kind is int and isinstance(value, float) and value != number:
        raise ValueError(f"its {name} is not a whole number: {value!r}")
    return number


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "…"


def _warn_config(path: Path, why: str) -> None:
    warnings.warn(f"{path}: {why}; its model, lr and batch size are left blank", SkippedFileWarning, stacklevel=2)


def _read_events(path: Path, run: Run) -> None:
    # Imported when needed: every `digitlab` command imports this module at start-up.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars: dict[str, list[Any]] = {}
    start, end = float("inf"), float("-inf")
    for event_file in sorted(_regular_files(path, EVENTS), key=lambda p: _natural(p.name)):
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


def _read_metrics_csv(path: Path, run: Run) -> None:
    """Best val/acc, test/acc and the val/acc curve from a CSV logger's metrics.csv; the wall time from the
    times config.yaml (written as the run starts) and metrics.csv (rewritten as it goes) were last written."""
    files = _regular_files(path, METRICS_CSV)
    if not files:
        return
    try:
        with files[0].open(newline="") as stream:
            rows = list(csv.DictReader(stream))
    except (OSError, UnicodeDecodeError, csv.Error):  # unreadable: the columns stay empty, the report goes on
        return
    test_acc = [value for row in rows if (value := _float(row.get("test/acc"))) is not None]
    if test_acc:
        run.test_acc = test_acc[-1]
    for row in rows:
        value = _float(row.get("val/acc"))
        if value is not None:
            epoch = _float(row.get("epoch"))
            run.val_acc_curve.append((int(epoch) + 1 if epoch is not None else len(run.val_acc_curve) + 1, value))
    if run.val_acc_curve:
        run.best_val_acc = max(value for _, value in run.val_acc_curve)
    if (path / "config.yaml").is_file():
        duration = files[0].stat().st_mtime - (path / "config.yaml").stat().st_mtime
        run.wall_time_s = duration if duration > 0 else None


def _float(text: Optional[str]) -> Optional[float]:
    try:
        return float(text) if text else None
    except ValueError:
        return None


def _newest_checkpoint(folder: Path) -> Optional[Path]:
    candidates = sorted(_regular_files(folder, "*.ckpt"), key=lambda p: (p.name == "last.ckpt", p.stat().st_mtime))
    return candidates[-1] if candidates else None


def _read_checkpoint(path: Optional[Path], run: Run) -> None:
    if path is None or not path.is_file():
        return
    import torch

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # unreadable or not weights-only loadable: the columns stay empty, the report goes on
        return
    state = checkpoint.get("state_dict", {})
    run.params = sum(value.numel() for value in state.values() if isinstance(value, torch.Tensor))
    progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_progress", {}).get("total", {})
    if "processed" in progress:  # epochs whose batches all ran (a checkpoint at an epoch's end counts it)
        run.epochs = progress["processed"]
    elif "epoch" in checkpoint:
        run.epochs = checkpoint["epoch"] + 1


def _regular_files(folder: Path, pattern: str) -> list[Path]:
    """The regular files of `folder` matching `pattern`: reading a FIFO of that name would wait forever."""
    return [path for path in folder.glob(pattern) if path.is_file()]


def sort_runs(runs: list[Run], key: str) -> list[Run]:
    """Runs sorted by column `key` (accuracies best first, the rest ascending), runs without it last; each
    run's evaluations right below it, sorted the same way."""
    ordered = sorted(runs, key=lambda run: _natural(run.version))
    present = [run for run in ordered if getattr(run, key) is not None]
    missing = [run for run in ordered if getattr(run, key) is None]
    ordered = sorted(present, key=lambda run: _sortable(getattr(run, key)), reverse=key in DESCENDING) + missing
    versions = {run.version for run in runs}
    below: dict[str, list[Run]] = {}
    for run in ordered:
        if run.of in versions:
            below.setdefault(run.of, []).append(run)
    return [shown for run in ordered if run.of not in versions for shown in [run, *below.get(run.version, [])]]


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


def check_plot_path(path: Path) -> str:
    """The image format of `path` (its extension); a UserError if no new image can be written there."""
    if path.is_dir():
        raise UserError(f"--plot {path} is a folder; give an image file name, such as {path / 'val_acc.png'}.")
    if os.path.lexists(path):
        raise UserError(f"--plot {path} already exists and digitlab never overwrites a file. Choose another name "
                        "or move the file away.")
    if not path.parent.is_dir():
        raise UserError(f"--plot {path}: the folder {path.parent} does not exist.")
    from matplotlib.backend_bases import FigureCanvasBase

    formats = FigureCanvasBase.get_supported_filetypes()
    extension = path.suffix[1:].lower()
    if extension not in formats:
        what = f"'.{extension}' is not an image format matplotlib writes" if extension else "the name has no extension"
        raise UserError(f"--plot {path}: {what}. End the name with one of "
                        f"{', '.join('.' + name for name in formats)}, such as val_acc.png.")
    return extension


def plot_val_acc(runs: list[Run], path: Path) -> None:
    """`val_acc_figure` of the runs, saved as a new image file."""
    image_format = check_plot_path(path)
    figure = val_acc_figure(runs, path)
    try:
        atomic_write(path, lambda stream: figure.savefig(stream, format=image_format), overwrite=False)
    except FileExistsError:
        raise UserError(f"--plot {path} appeared while the report ran; digitlab never overwrites a file.") from None
    except (OSError, RuntimeError) as error:  # a full disk; .pgf without LaTeX
        raise UserError(f"--plot {path} could not be written: {error}") from None


def val_acc_figure(runs: list[Run], path: Path) -> Any:
    """Validation accuracy against epoch, one line per training run with validation (an evaluation is not one:
    a validate would be a lone dot), as a matplotlib Figure for the image file `path`."""
    curves = [run for run in runs if run.val_acc_curve and run.kind == "fit"]
    if not curves:
        raise UserError(f"No training run logged val/acc, so {path} was not written (runs with "
                        "`data.val_split: 0` have no validation).")
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
    return figure


def load_runs(log_dirs: list[Path]) -> list[Run]:
    """The runs and evaluations under each of `log_dirs`, each evaluation knowing its run (`Run.of`)."""
    runs = []
    for log_dir in log_dirs:
        found = find_runs(log_dir)
        if not found:
            raise UserError(f"No runs in {log_dir}: no folder in it holds TensorBoard event files "
                            "(events.out.tfevents.*) or a CSV logger's metrics.csv. Runs of `digitlab fit` are in "
                            "lightning_logs/version_N/.")
        labels = {path: _label(path, log_dir, len(log_dirs) > 1, log_dir in found) for path in found}
        for path in found:
            run = read_run(path, labels[path])
            run.of = labels.get(path.parent) if run.kind != "fit" else None
            runs.append(run)
    return runs


def report_command(args: list[str]) -> None:
    """`digitlab report [LOG_DIR ...] [--format table|markdown|csv] [--sort KEY] [--plot FILE.png]`."""
    parser = argparse.ArgumentParser(
        prog="digitlab report",
        description="Compare runs: one row per run (a folder with TensorBoard event files or a metrics.csv) under "
        "each LOG_DIR, from its config.yaml, event files (or metrics.csv) and newest checkpoint, and one row per "
        "evaluation of a run (validate, test, predict: a folder such as version_0/test_0), right below its run, "
        "with the checkpoint it evaluated. Nothing is written into the runs.",
    )
    parser.add_argument("log_dirs", nargs="*", default=["lightning_logs"], metavar="LOG_DIR",
                        help="a folder of runs, one run's folder, or a sweep's folder (lightning_logs/sweeps/NAME: "
                        "its trials, best first) (default: lightning_logs)")
    parser.add_argument("--format", choices=["table", "markdown", "csv"], default="table",
                        help="plain table (default), markdown table, or CSV with raw values (wall time in seconds)")
    parser.add_argument("--sort", choices=KEYS, default="test_acc",
                        help="column to sort by (default: test_acc); accuracies best first, others ascending; "
                        "evaluations stay below their run")
    parser.add_argument("--plot", type=Path, metavar="FILE.png",
                        help="also draw the training runs' validation accuracy curves on one chart into this new "
                        "image file (.png, .svg, .pdf, ...; an existing file is never overwritten)")
    options = parser.parse_args(args)
    if options.plot is not None:
        check_plot_path(options.plot)  # before any run is read

    from digitlab.sweep.report import is_sweep_folder, sweep_report  # a sweep's folder: its trials, best first

    folders = [Path(log_dir) for log_dir in options.log_dirs]
    sweeps = [folder for folder in folders if is_sweep_folder(folder)]
    for folder in sweeps:
        sys.stdout.write(sweep_report(folder, options.format))
    others = [folder for folder in folders if folder not in sweeps]
    if sweeps and not others:
        return
    runs = sort_runs(load_runs(others), options.sort)
    sys.stdout.write(format_runs(runs, options.format))
    if options.plot is not None:
        plot_val_acc(runs, options.plot)
        print(f"Validation accuracy curves: {options.plot}", file=sys.stderr)


def _label(path: Path, log_dir: Path, several_dirs: bool, log_dir_is_a_run: bool) -> str:
    """How a run is named in the report: its path under `log_dir` (``version_0``, ``version_0/test_0``), the
    run folder's own name leading when `log_dir` is a run; the whole path when several folders are listed
    (versions repeat across them)."""
    if several_dirs:
        return path.as_posix()
    relative = path.relative_to(log_dir)
    return (Path(log_dir.resolve().name) / relative if log_dir_is_a_run else relative).as_posix()


def _cell(run: Run, key: str, fmt: Callable[[Any], str]) -> str:
    value = getattr(run, key)
    return "—" if value is None else fmt(value)


def _natural(text: str) -> list:
    """Sort key in which numbers compare as numbers: version_2 before version_10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _sortable(value: Any) -> Any:
    return _natural(value) if isinstance(value, str) else value
