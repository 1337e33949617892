"""Runs from disk: the run folders under a log folder, each read into a `Run` (nothing is written)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

from digitlab.errors import SkippedFileWarning, UserError
from digitlab.report.metrics import read_events, read_metrics_csv
from digitlab.report.run import Run
from digitlab.report.run_files import CONFIG, EVENTS, METRICS_CSV, newest_checkpoint, regular_files
from digitlab.report.saved_config import read_config
from digitlab.runs.layout import EVALUATION_FOLDER, LR_FIND
from digitlab.utils.text import natural_key


def find_runs(log_dir: Path) -> list[Path]:
    """The folders under `log_dir` (itself included) that hold event files or a metrics.csv, in natural order
    (version_2 < 10)."""
    if not log_dir.is_dir():
        raise UserError(
            f"{log_dir} is not a folder. Give the folder that holds the runs (default: lightning_logs, where "
            "`digitlab fit` writes them), or train a model first: `digitlab fit --config configs/lenet5.yaml`."
        )
    runs = {path.parent for pattern in (EVENTS, METRICS_CSV) for path in log_dir.rglob(pattern) if path.is_file()
            and LR_FIND not in path.relative_to(log_dir).parts[:-1]}  # a range test is no run to compare
    return sorted(runs, key=lambda path: natural_key(str(path)))


def read_run(path: Path, version: str) -> Run:
    evaluation = EVALUATION_FOLDER.fullmatch(path.name)
    run = Run(version=version, kind=evaluation.group(1) if evaluation else "fit")
    ckpt_path = read_config(path / CONFIG, run)
    if regular_files(path, EVENTS):
        read_events(path, run)
    else:
        read_metrics_csv(path, run)
    if not evaluation:
        _read_checkpoint(newest_checkpoint(path / "checkpoints"), run)
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


def _read_checkpoint(path: Optional[Path], run: Run) -> None:
    """Epochs and parameters from a checkpoint, read by the one checkpoint reader (weights only)."""
    if path is None or not path.is_file():
        return
    import torch

    from digitlab.runs import checkpoints

    try:
        checkpoint = checkpoints.load(str(path), weights_only=True)
    except UserError:  # unreadable or not weights-only loadable: the columns stay empty, the report goes on
        return
    run.params = sum(value.numel() for value in checkpoint["state_dict"].values() if isinstance(value, torch.Tensor))
    progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_progress", {}).get("total", {})
    if "processed" in progress:  # epochs whose batches all ran (a checkpoint at an epoch's end counts it)
        run.epochs = progress["processed"]
    elif "epoch" in checkpoint:
        run.epochs = checkpoint["epoch"] + 1


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
            try:
                run = read_run(path, labels[path])
            except OSError as error:  # a disk error (EIO), no permission: one bad run never stops the report
                reason = error.strerror or str(error) or type(error).__name__
                warnings.warn(f"{path}: cannot be read ({reason}); this run is left out of the report",
                              SkippedFileWarning, stacklevel=2)
                continue
            if run.kind == "predict":  # earlier versions logged predictions' runs, which hold no metrics
                continue
            run.of = labels.get(path.parent) if run.kind != "fit" else None
            runs.append(run)
    return runs


def _label(path: Path, log_dir: Path, several_dirs: bool, log_dir_is_a_run: bool) -> str:
    """How a run is named in the report: its path under `log_dir` (``version_0``, ``version_0/test_0``), the
    run folder's own name leading when `log_dir` is a run; the whole path when several folders are listed
    (versions repeat across them)."""
    if several_dirs:
        return path.as_posix()
    relative = path.relative_to(log_dir)
    return (Path(log_dir.resolve().name) / relative if log_dir_is_a_run else relative).as_posix()
