"""Small real filesystems for tests of writing that fails: read-only, or full. Mounting needs root (or
CAP_SYS_ADMIN); without it the test is skipped with the reason."""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path
from typing import Iterator

import pytest


@contextlib.contextmanager
def tmpfs(folder: Path, *options: str) -> Iterator[Path]:
    """A tmpfs mounted at `folder` (created) with mount `options` such as ``ro`` or ``size=64k``."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(("size=1m", *options)), "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@contextlib.contextmanager
def full_filesystem(folder: Path) -> Iterator[Path]:
    """A writable folder on a filesystem with no byte left: creating a file works, writing to it does not."""
    with tmpfs(folder, "size=64k") as mounted:
        with (mounted / "filler").open("wb", buffering=0) as filler, contextlib.suppress(OSError):
            while filler.write(b"\0" * 4096):  # until ENOSPC
                pass
        yield mounted
