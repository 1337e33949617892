"""The one table formatter: rows of cells as aligned plain-text columns, a Markdown table, or CSV."""

from __future__ import annotations

import csv
import io
from typing import Any, Optional, Sequence

STYLES = ("table", "markdown")  # what `format_table` writes; CSV, with raw values, is `csv_text`


def aligned_lines(header: Sequence[str], rows: Sequence[Sequence[str]],
                  right: Optional[Sequence[bool]] = None) -> list[str]:
    """The header and rows as lines of columns two spaces apart, each as wide as its widest cell: text
    left-aligned, columns marked in `right` (numbers) right-aligned; no line ends in spaces."""
    right = right if right is not None else [False] * len(header)
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return ["  ".join(cell.rjust(width) if is_right else cell.ljust(width)
                      for cell, width, is_right in zip(row, widths, right)).rstrip()
            for row in [header, *rows]]


def markdown_lines(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool]) -> list[str]:
    """A Markdown (GitHub) table: the columns marked in `right` right-aligned (``---:``)."""
    rule = ["---:" if is_right else "---" for is_right in right]
    return [f"| {' | '.join(row)} |" for row in [header, rule, *rows]]


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool], style: str) -> str:
    """`aligned_lines` (``table``) or `markdown_lines` (``markdown``), each line ending in a newline."""
    if style not in STYLES:
        raise ValueError(f"unknown table style {style!r}: expected one of {', '.join(STYLES)}")
    lines = markdown_lines(header, rows, right) if style == "markdown" else aligned_lines(header, rows, right)
    return "".join(line + "\n" for line in lines)


def csv_text(header: Sequence[str], rows: Sequence[Sequence[Any]], line_end: str = "\n") -> str:
    """The header and rows as CSV, raw values, an empty field for None."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator=line_end)
    writer.writerow(header)
    writer.writerows(["" if cell is None else cell for cell in row] for row in rows)
    return buffer.getvalue()
