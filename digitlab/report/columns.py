"""The report's columns: each value's key (CSV header, ``--sort`` name), title and shown form."""

from __future__ import annotations

from typing import Any, Callable


def duration(seconds: float) -> str:
    """A wall time as people read it: ``42s``, ``3m07s``, ``2h05m``."""
    seconds = round(seconds)
    hours, minutes = divmod(seconds // 60, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{seconds % 60:02d}s" if minutes else f"{seconds}s"


def cell(value: Any, shown: Callable[[Any], str]) -> str:
    """A value as a table shows it; a dash where the run did not save it."""
    return "—" if value is None else shown(value)


# (key: CSV header and --sort name, title: table header, format for the table and markdown, numeric)
COLUMNS: list[tuple[str, str, Callable[[Any], str], bool]] = [
    ("version", "version", str, False),
    ("kind", "kind", str, False),
    ("checkpoint", "checkpoint", str, False),
    ("model", "model", str, False),
    ("lr", "lr", "{:g}".format, True),
    ("batch_size", "batch size", str, True),
    ("epochs", "epochs", str, True),
    ("best_val_acc", "best val/acc", "{:.4f}".format, True),
    ("test_acc", "test/acc", "{:.4f}".format, True),
    ("wall_time_s", "wall time", duration, True),
    ("params", "params", "{:,}".format, True),
]
KEYS = [key for key, *_ in COLUMNS]
DESCENDING = {"best_val_acc", "test_acc"}  # best first; every other column sorts in ascending order
