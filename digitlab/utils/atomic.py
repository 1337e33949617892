"""The one way digitlab writes a file: a name holds either its previous complete content or its new complete
content, never a part, and a file that must stay new (``overwrite=False``) never replaces anything.

The file is written under a hidden temporary name beside the target, flushed to disk (fsync), then given its
name: renamed over the target (``overwrite=True``), or linked to a name that must not exist yet
(``overwrite=False``: `FileExistsError` if it does, even when it appeared while the file was being written).
On any failure (a full disk, a failed check, a kill) the target keeps its previous content and the temporary
file is removed (after a SIGKILL it stays, hidden, beside the target).

Symbolic links: a link at the target's name is never written through and never replaced, whatever
``overwrite`` says: `LinkAtTarget` (a `FileExistsError`). Following it would write where the name does not say;
replacing it would silently undo what the user set up. Either way a command could not honestly say where its
file went.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from digitlab.utils import stop_requests


class LinkAtTarget(FileExistsError):
    """The target's name is a symbolic link (dangling or not), which `atomic_output` neither follows nor replaces."""


def atomic_write(path: Path, write: Callable[[BinaryIO], object], *, overwrite: bool) -> None:
    """Call ``write(stream)`` on a binary stream, then give what it wrote the name `path` (see the module)."""
    with atomic_output(path, overwrite=overwrite) as temporary:
        with temporary.open("wb") as stream:
            write(stream)


def atomic_write_text(path: Path, text: str, *, overwrite: bool) -> None:
    """`text`, as UTF-8, at `path` (see the module)."""
    atomic_write(path, lambda stream: stream.write(text.encode()), overwrite=overwrite)


@contextmanager
def atomic_output(path: Path, *, overwrite: bool) -> Iterator[Path]:
    """A new, empty temporary file beside `path` for the block to write (by name: for writers that take a path
    rather than a stream) and check; when the block ends without an error, it becomes `path`.

    Ctrl-C and SIGTERM (see `digitlab.utils.stop_requests`) stop the block's writing, and the temporary file is
    removed; once written, the file gets its name before the stop: whole, or not at all."""
    _refuse_link(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with stop_requests.deferred(raise_at_end=False):  # the temporary file exists only with the clean-up below
        descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    temporary = Path(name)
    try:
        stop_requests.raise_pending()
        os.fchmod(descriptor, 0o666 & ~_umask())  # mkstemp's file is private (0600); an output is not
        os.close(descriptor)
        yield temporary
        with stop_requests.deferred():
            _fsync_file(temporary)
            _refuse_link(path)  # again: a link may have been made while the file was written
            if overwrite:
                os.replace(temporary, path)  # atomic within a filesystem: the temporary file is in the same folder
            else:
                _link_new(temporary, path)
            _fsync_folder(path.parent)  # the new name itself survives a power cut
    finally:
        with stop_requests.deferred():
            temporary.unlink(missing_ok=True)


def _refuse_link(path: Path) -> None:
    if path.is_symlink():
        raise LinkAtTarget(errno.EEXIST, f"a symbolic link (to {os.readlink(path)}) is in the way", str(path))


def _link_new(temporary: Path, path: Path) -> None:
    """Give `temporary`'s content the name `path`, which must not exist (a link to anything included)."""
    try:
        os.link(temporary, path)  # atomic, and fails if the name exists
    except FileExistsError:
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path)) from None
    except OSError:  # a filesystem without hard links: exclusive creation, then a copy
        with open(path, "xb") as target, open(temporary, "rb") as source:
            try:
                shutil.copyfileobj(source, target)
                target.flush()
                os.fsync(target.fileno())
            except BaseException:
                path.unlink(missing_ok=True)  # ours: the exclusive creation made it
                raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_file(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _fsync_folder(folder: Path) -> None:
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:  # some filesystems (and platforms) cannot open a folder: the rename is still atomic
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
