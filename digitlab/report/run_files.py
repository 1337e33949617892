"""Which files of a run folder the report reads, and only regular ones: reading a FIFO would wait forever."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

EVENTS = "events.out.tfevents.*"
METRICS_CSV = "metrics.csv"  # Lightning's CSVLogger
CONFIG = "config.yaml"


def regular_files(folder: Path, pattern: str) -> list[Path]:
    """The regular files of `folder` matching `pattern`."""
    return [path for path in folder.glob(pattern) if path.is_file()]


def newest_checkpoint(folder: Path) -> Optional[Path]:
    """``last.ckpt`` if `folder` holds one, else its most recently written checkpoint."""
    candidates = sorted(regular_files(folder, "*.ckpt"), key=lambda p: (p.name == "last.ckpt", p.stat().st_mtime))
    return candidates[-1] if candidates else None
