"""Small real filesystems for tests of writing that fails: read-only, or full. Mounting needs root (or
CAP_SYS_ADMIN); without it the test is skipped with the reason."""

from __future__ import annotations

import contextlib
import os
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
        unmount(folder)


def unmount(folder: Path) -> None:
    """Unmount `folder`; while this process still maps a file from it (torch keeps a loaded checkpoint mapped
    until its last tensor is gone), detach it now and let the kernel free it then."""
    if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "--lazy", str(folder)], check=True)


@contextlib.contextmanager
def full_filesystem(folder: Path, free_pages: int = 0) -> Iterator[Path]:
    """A writable folder on a filesystem with no byte left (or `free_pages` pages of 4 KiB): creating a file
    works, writing more than that to it does not."""
    with tmpfs(folder, "size=64k") as mounted:
        filler = mounted / "filler"
        with filler.open("wb", buffering=0) as stream, contextlib.suppress(OSError):
            while stream.write(b"\0" * 4096):  # until ENOSPC
                pass
        os.truncate(filler, max(0, filler.stat().st_size - 4096 * free_pages))
        yield mounted


def remount(folder: Path, *options: str) -> None:
    """Mount the filesystem at `folder` again with `options` (``ro``, ``rw``), as an administrator would."""
    subprocess.run(["mount", "-o", ",".join(("remount", *options)), str(folder)], check=True, capture_output=True)


@contextlib.contextmanager
def read_only_view(source: Path, folder: Path) -> Iterator[Path]:
    """`source` seen read-only at `folder` (a read-only bind mount): the same files, no write gets through."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "--bind", str(source), str(folder)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot bind-mount here (needs root): {mounted.stderr.strip()}")
    try:
        remount(folder, "bind", "ro")
        yield folder
    finally:
        unmount(folder)
