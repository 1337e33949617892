"""The runs in the report's order, and as a table, a Markdown table or CSV."""

from __future__ import annotations

from typing import Any

from digitlab.report.columns import COLUMNS, DESCENDING, KEYS, cell
from digitlab.report.run import Run
from digitlab.utils.tables import csv_text, format_table
from digitlab.utils.text import natural_key


def sort_runs(runs: list[Run], key: str) -> list[Run]:
    """Runs sorted by column `key` (accuracies best first, the rest ascending), runs without it last; each
    run's evaluations right below it, sorted the same way."""
    ordered = sorted(runs, key=lambda run: natural_key(run.version))
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
        return csv_text(KEYS, [[getattr(run, key) for key in KEYS] for run in runs])
    titles = [title for _, title, _, _ in COLUMNS]
    rows = [[cell(getattr(run, key), shown) for key, _, shown, _ in COLUMNS] for run in runs]
    return format_table(titles, rows, right=[numeric for *_, numeric in COLUMNS], style=style)


def _sortable(value: Any) -> Any:
    return natural_key(value) if isinstance(value, str) else value
