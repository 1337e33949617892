"""What a run logged: best val/acc, the last test/acc, the val/acc curve and the wall time, from its TensorBoard
event files or its CSV logger's metrics.csv."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Optional

from digitlab.report.run import Run
from digitlab.report.run_files import CONFIG, EVENTS, METRICS_CSV, regular_files
from digitlab.utils.text import natural_key


def read_events(path: Path, run: Run) -> None:
    # Imported when needed: a run logged by the CSV logger alone needs no TensorBoard.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars: dict[str, list[Any]] = {}
    start, end = float("inf"), float("-inf")
    for event_file in sorted(regular_files(path, EVENTS), key=lambda p: natural_key(p.name)):
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
        run.val_acc_curve = [(epoch_at_step.get(e.step, i), e.value) for i, e in enumerate(val_acc)]


def read_metrics_csv(path: Path, run: Run) -> None:
    """Best val/acc, test/acc and the val/acc curve from a CSV logger's metrics.csv; the wall time from the
    times config.yaml (written as the run starts) and metrics.csv (rewritten as it goes) were last written."""
    files = regular_files(path, METRICS_CSV)
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
            run.val_acc_curve.append((int(epoch) if epoch is not None else len(run.val_acc_curve), value))
    if run.val_acc_curve:
        run.best_val_acc = max(value for _, value in run.val_acc_curve)
    if (path / CONFIG).is_file():
        duration = files[0].stat().st_mtime - (path / CONFIG).stat().st_mtime
        run.wall_time_s = duration if duration > 0 else None


def _float(text: Optional[str]) -> Optional[float]:
    try:
        return float(text) if text else None
    except ValueError:
        return None
