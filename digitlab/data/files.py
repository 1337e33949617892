"""Where the four MNIST files are, and how they get there (torchvision's mirrors, atomically)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional
from urllib.error import HTTPError
from urllib.parse import urlsplit

from digitlab.data.idx import IdxSpec
from digitlab.errors import DataError

DATA_DIR_ENV = "DIGITLAB_DATA_DIR"
DEFAULT_DATA_DIR = "data"

# MD5 of the extracted bytes of the official files (the values torchvision and others publish).
MNIST_FILES = {
    "train_images": IdxSpec("train-images-idx3-ubyte", (60000, 28, 28), "6bbc9ace898e44ae57da46a324031adb"),
    "train_labels": IdxSpec("train-labels-idx1-ubyte", (60000,), "a25bea736e30d166cdddb491f175f624"),
    "test_images": IdxSpec("t10k-images-idx3-ubyte", (10000, 28, 28), "2646ac647ad5339dbf082846283269ea"),
    "test_labels": IdxSpec("t10k-labels-idx1-ubyte", (10000,), "27ae3e4e09519cfbb04c329615203637"),
}


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """`data_dir` if given, else $DIGITLAB_DATA_DIR, else ``data/``."""
    return Path(data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR)


def torchvision_dir(data_dir: Path) -> Path:
    """torchvision's layout inside the data folder, ``MNIST/raw/``: where downloads land."""
    return data_dir / "MNIST" / "raw"


def search_dirs(data_dir: Path) -> list[Path]:
    """The folders searched: the data folder itself, then torchvision's ``MNIST/raw/`` layout inside it."""
    return [data_dir, torchvision_dir(data_dir)]


def find_file(data_dir: Path, spec: IdxSpec) -> Path | None:
    for folder in search_dirs(data_dir):
        for candidate in (folder / spec.name, folder / f"{spec.name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def locate(data_dir: Path, keys: list[str], *, download: bool) -> dict[str, Path]:
    """Paths of the requested MNIST files, downloading the missing ones if allowed."""
    if data_dir.exists() and not data_dir.is_dir():
        raise DataError(
            f"The data folder {data_dir} is a file, not a folder. Point `--data.data_dir` (or ${DATA_DIR_ENV}) "
            "at the folder that holds the MNIST files."
        )
    found = {key: find_file(data_dir, MNIST_FILES[key]) for key in keys}
    missing = [key for key, path in found.items() if path is None]
    failure = None
    if missing and download:
        try:
            download_mnist(data_dir, [MNIST_FILES[key] for key in missing])
        except DownloadFailed as error:
            failure = error
        found.update({key: find_file(data_dir, MNIST_FILES[key]) for key in missing})
        missing = [key for key, path in found.items() if path is None]
    if missing:
        raise DataError(_not_found(data_dir, [MNIST_FILES[key].name for key in missing], download, failure))
    return found  # type: ignore[return-value]


def _not_found(data_dir: Path, names: list[str], download: bool, failure: Optional[DownloadFailed]) -> str:
    """What is missing and where it was looked for, what the download did, and how to fix it."""
    raw_dir = torchvision_dir(data_dir)
    every_file = ", ".join(spec.name for spec in MNIST_FILES.values())
    holds_some = data_dir.is_dir() and any(find_file(data_dir, spec) for spec in MNIST_FILES.values())
    if holds_some:
        what = f"{', '.join(names)} (each plain or .gz) not in {data_dir} or {raw_dir}"
        where = f"a folder that holds all four MNIST files, copy the missing ones into {data_dir}"
    else:
        state = "holds no MNIST file" if data_dir.is_dir() else "does not exist"
        what = f"{data_dir} {state} (looked in it and in {raw_dir}, torchvision's layout)"
        where = (f"the folder that holds the MNIST files ({every_file}, each plain or .gz, directly or in "
                 f"MNIST/raw/), copy them into {data_dir}")
    if not download:
        download_note = " Downloading is off (`data.download: false`)."
        instead = "or allow the download with `--data.download true`"
    else:
        download_note = f" Downloading them from torchvision's mirrors failed: {failure.reason}." if failure else ""
        instead = "or run again online to download them"
    fix = f"Point `--data.data_dir` (or ${DATA_DIR_ENV}) at {where}, {instead}."
    return f"MNIST files not found: {what}.{download_note} {fix}"


class DownloadFailed(DataError):
    """No mirror delivered an MNIST file; `reason` says why, in one line."""

    def __init__(self, filename: str, raw_dir: Path, reason: str) -> None:
        super().__init__(f"Could not download {filename} into {raw_dir} from torchvision's MNIST mirrors: {reason}.")
        self.reason = reason


def download_mnist(data_dir: Path, specs: list[IdxSpec]) -> None:
    """Download `specs` from torchvision's MNIST mirrors into ``data_dir/MNIST/raw``.

    Each file is downloaded into the system's temporary folder and checked against torchvision's MD5; only
    then are the missing folders of ``data_dir/MNIST/raw`` created and the file written there atomically (a
    temporary name, then a rename). So a failed or interrupted download leaves nothing that looks valid, and
    the folders it created are removed again if they stayed empty (a folder that existed before is kept).
    """
    from torchvision.datasets import MNIST

    from digitlab.utils.atomic import atomic_write

    raw_dir = torchvision_dir(data_dir)
    archive_md5 = dict(MNIST.resources)
    created: list[Path] = []
    try:
        for spec in specs:
            filename = f"{spec.name}.gz"
            with tempfile.TemporaryDirectory(prefix="digitlab-mnist-") as tmp:
                downloaded = _download(filename, Path(tmp), archive_md5.get(filename), raw_dir)
                created += _make_folders(raw_dir)
                try:
                    with downloaded.open("rb") as source:
                        atomic_write(raw_dir / filename, lambda target: shutil.copyfileobj(source, target),
                                     overwrite=True)
                except OSError as error:  # a full disk, no permission
                    raise DataError(f"Could not write the downloaded {raw_dir / filename}: "
                                    f"{error.strerror or error}. Free some space (or fix the folder's permissions) "
                                    "and run again.") from None
    except BaseException:
        for folder in reversed(created):  # innermost first; rmdir refuses a folder that holds anything
            try:
                folder.rmdir()
            except OSError:
                break
        raise


def _download(filename: str, folder: Path, md5: Optional[str], raw_dir: Path) -> Path:
    """`filename` from the first of torchvision's MNIST mirrors that delivers it intact, into `folder`."""
    from torchvision.datasets import MNIST
    from torchvision.datasets.utils import check_md5, download_url

    reasons: dict[str, list[str]] = {}  # why each mirror failed -> the mirrors that failed so
    for mirror in MNIST.mirrors:
        try:
            download_url(f"{mirror}{filename}", str(folder), filename)
            if md5 is None or check_md5(folder / filename, md5):
                return folder / filename
            reason = "the file received does not match torchvision's MD5 checksum"
        except Exception as error:  # network errors come in many types; each mirror gets its chance
            reason = _one_line(error)
        (folder / filename).unlink(missing_ok=True)
        reasons.setdefault(reason, []).append(urlsplit(mirror).netloc or mirror)
    raise DownloadFailed(filename, raw_dir, "; ".join(f"{why} ({', '.join(hosts)})" for why, hosts in reasons.items()))


def _one_line(error: Exception) -> str:
    """The reason of a download error, in at most 200 characters of one line."""
    reason = getattr(error, "reason", None)  # a URLError's own cause: "[Errno 111] Connection refused"
    text = " ".join(str(reason if reason is not None and not isinstance(error, HTTPError) else error).split())
    text = text or type(error).__name__
    return text if len(text) <= 200 else text[:199] + "…"


def _make_folders(folder: Path) -> list[Path]:
    """Create `folder` and its missing parents; return those this call created, outermost first."""
    created = []
    for path in [*reversed(folder.parents), folder]:
        if path.is_dir():
            continue
        try:
            path.mkdir()
            created.append(path)
        except FileExistsError:
            if not path.is_dir():
                raise DataError(f"Cannot create the data folder {folder}: {path} is a file.") from None
        except OSError as error:
            raise DataError(f"Cannot create the data folder {folder}: {error.strerror or error}.") from None
    return created
