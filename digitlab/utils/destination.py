"""Whether a command's output file can be written where the user asked, said before the command does its work;
and why a write failed, said in words, when it fails anyway at the end.

The rules are `atomic_output`'s, checked early: a symbolic link is never a destination, a folder is not a file,
an existing file is never replaced by a file that must be new, and the folder that will hold the file must
accept a new file (read-only mounts, ``/proc`` and ``/sys`` do not, even for root).
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
from pathlib import Path
from typing import Optional


# Why a write fails when the place, not the program, is at fault: no room (a full disk, a quota, a file-size limit
# such as `ulimit -f`), or a place that takes no new file (a read-only mount, a folder that is not the user's).
NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
NOT_WRITABLE = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})
PROBE_BYTES = 4096  # one page: a file system with no page left refuses it


def write_probe(folder: Path) -> None:
    """Raise the `OSError` that a small write into `folder` gets (read-only, full, over a file-size limit), or
    return. The bytes are flushed to the disk, so that a file system that only finds out it is full when data
    reach it (delayed allocation) says so now. Nothing is left behind: the file has no name."""
    with tempfile.TemporaryFile(dir=folder) as probe:
        probe.write(bytes(PROBE_BYTES))
        probe.flush()
        os.fsync(probe.fileno())


def file_system_of(path: Path) -> Path:
    """The mount point of the file system that holds `path` (or would hold it, for a path not yet made); bind
    mounts included, which share a device with the folder above them."""
    path = Path(os.path.abspath(path))
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as mounts:  # Linux
            points = {Path(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[1]))
                      for line in mounts if len(line.split()) > 1}
    except OSError:
        points = set()
    return next((p for p in (path, *path.parents) if p in points or os.path.ismount(p)), Path(path.anchor or "/"))


def destination_problem(path: Path, *, overwrite: bool) -> Optional[str]:
    """Why no file can be written at `path`, as words that follow its name ("is a folder; ..."), or None."""
    if path.is_symlink():
        where = os.readlink(path)
        return (f"is a symbolic link (to {where}{'' if path.exists() else ', which does not exist'}), and digitlab "
                "never writes through or over a link")
    if path.is_dir():
        return f"is a folder, not a file; give the name of a new file, such as {path / 'name'}"
    if os.path.lexists(path) and (not overwrite or not path.is_file()):
        return "already exists and digitlab never overwrites a file"
    folder = next(parent for parent in path.parents if os.path.lexists(parent))  # "." or "/" at the latest
    if not folder.is_dir():
        return f"cannot be written: {folder} is {'a symbolic link to nowhere' if folder.is_symlink() else 'a file'}, " \
               "not a folder"
    try:
        tempfile.TemporaryFile(dir=folder).close()  # the one test that sees read-only mounts and root alike
    except OSError as error:
        return (f"cannot be written: the folder {folder} does not accept new files; it is read-only or not yours "
                f"({error.strerror or error})")
    return None


def write_failure(error: OSError) -> str:
    """An `OSError` from writing a file, as words: the reason and the name it concerns."""
    return f"{error.strerror or error}" + (f" ({error.filename})" if error.filename else "")
