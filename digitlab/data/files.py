"""Where the four MNIST files are, and how they get there (torchvision's mirrors, atomically)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

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


def search_dirs(data_dir: Path) -> list[Path]:
    """The folders searched: the data folder itself, then torchvision's ``MNIST/raw/`` layout inside it."""
    return [data_dir, data_dir / "MNIST" / "raw"]


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
    if missing and download:
        download_mnist(data_dir, [MNIST_FILES[key] for key in missing])
        found.update({key: find_file(data_dir, MNIST_FILES[key]) for key in missing})
        missing = [key for key, path in found.items() if path is None]
    if missing:
        names = ", ".join(MNIST_FILES[key].name for key in missing)
        where = " and ".join(str(folder) for folder in search_dirs(data_dir))
        raise DataError(
            f"MNIST files not found: {names} (each plain or .gz), looked in {where}. "
            f"Copy the four MNIST files into one of those folders, point `--data.data_dir` (or ${DATA_DIR_ENV}) "
            "at a folder that holds them, or allow the download with `--data.download true`."
        )
    return found  # type: ignore[return-value]


def download_mnist(data_dir: Path, specs: list[IdxSpec]) -> None:
    """Download `specs` from torchvision's MNIST mirrors into ``data_dir/MNIST/raw``.

    Each file lands in a temporary folder first, is checked against torchvision's MD5, and only then is
    renamed into place: an interrupted or failed download leaves nothing that looks valid.
    """
    from torchvision.datasets import MNIST
    from torchvision.datasets.utils import download_url

    raw_dir = data_dir / "MNIST" / "raw"
    try:
        raw_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(f"Cannot create the data folder {raw_dir}: {error.strerror or error}.")
    archive_md5 = dict(MNIST.resources)
    for spec in specs:
        filename = f"{spec.name}.gz"
        errors = []
        with tempfile.TemporaryDirectory(dir=raw_dir, prefix=".download-") as tmp:
            for mirror in MNIST.mirrors:
                try:
                    download_url(f"{mirror}{filename}", tmp, filename, archive_md5.get(filename))
                except Exception as error:  # network errors come in many types; each mirror gets its chance
                    errors.append(f"{mirror}: {error}")
                    continue
                shutil.move(os.path.join(tmp, filename), raw_dir / filename)
                break
            else:
                raise DataError(
                    f"Could not download {filename} into {raw_dir} from any of torchvision's MNIST mirrors "
                    f"({'; '.join(errors)}). If you are offline, copy the four MNIST files into a folder and "
                    f"pass it as `--data.data_dir` (or set ${DATA_DIR_ENV})."
                )
