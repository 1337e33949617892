"""A run folder belongs to one job: while a process writes into it, it holds the folder's lock, and a second job
that would continue in the same folder (a SLURM job requeued by hand while the first still runs, a second
launch that takes itself for a restart) is refused in one line instead of writing into it too.

The lock is `flock` on ``.lock`` in the run folder, held by global rank 0 (the only process that writes there).
The operating system releases it when the process ends, however it ends (SIGKILL, a lost node's process killed
by its agent), so a requeued or restarted job finds its folder free. On a network file system `flock` works as
far as the file system's locks do (NFSv4, Lustre and GPFS support them).
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path
from typing import Optional

from lightning.pytorch.utilities.rank_zero import rank_zero_only

from digitlab.errors import UserError
from digitlab.runs import layout

OWNER_MAX_BYTES = 512  # what the lock file says of its holder: one short line

_held: dict[Path, int] = {}  # run folder -> the open lock file, while this process holds it


def hold(folder: Path) -> None:
    """Hold `folder` for this process (global rank 0) until `release`, or refuse when another process holds it."""
    folder = Path(folder)
    if rank_zero_only.rank != 0 or folder in _held:
        return
    descriptor = os.open(folder / layout.LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.read(descriptor, OWNER_MAX_BYTES).decode(errors="replace").strip() or "another process"
        os.close(descriptor)
        raise UserError(f"The run folder {folder} is in use by {owner}, and a run folder belongs to one job: this "
                        "one writes nothing into it. Wait for that job to end (a requeued or restarted job continues "
                        "it by itself), or start a new run without SLURM_RESTART_COUNT or "
                        "TORCHELASTIC_RESTART_COUNT set.") from None
    os.ftruncate(descriptor, 0)
    os.write(descriptor, f"{_owner()}\n".encode())
    _held[folder] = descriptor


def release(folder: Optional[Path]) -> None:
    """Let go of `folder`'s lock, if this process holds it (the file stays: removing it could let two processes
    lock two different files)."""
    descriptor = _held.pop(Path(folder), None) if folder is not None else None
    if descriptor is not None:
        os.close(descriptor)  # closing the file releases the flock


def _owner() -> str:
    job = os.environ.get("SLURM_JOB_ID")
    return f"process {os.getpid()} on {socket.gethostname()}" + (f" (SLURM job {job})" if job else "")
