"""Reading and verifying IDX files, the format MNIST ships in (http://yann.lecun.com/exdb/mnist/)."""

from __future__ import annotations

import gzip
import hashlib
import math
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch

from digitlab.errors import DataError

_UBYTE = 0x08


@dataclass(frozen=True)
class IdxSpec:
    """What one IDX file must hold: its standard name, the shape, and the MD5 of its extracted bytes."""

    name: str
    shape: tuple[int, ...]
    md5: str | None = None

    @property
    def magic(self) -> int:
        return (_UBYTE << 8) | len(self.shape)


def read_idx(path: Path, spec: IdxSpec, *, verify: bool = True) -> torch.Tensor:
    """Read an unsigned-byte IDX file (plain or .gz) into a uint8 tensor.

    The magic number and the header's rank are always checked, and the payload must be exactly as long
    as the header says. With `verify`, the shape and the MD5 of the extracted bytes must also equal
    `spec` (the official MNIST values), so an altered file is never used silently.
    """
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise DataError(f"{path} is not an IDX file: it holds only {len(raw)} bytes. {_REPLACE_HINT}")
    magic = int.from_bytes(raw[:4], "big")
    if magic != spec.magic:
        raise DataError(
            f"{path} has the IDX magic number 0x{magic:08x}, expected 0x{spec.magic:08x} for "
            f"{spec.name} (unsigned bytes, {len(spec.shape)} dimensions). Is it the right file? {_REPLACE_HINT}"
        )
    header_len = 4 + 4 * len(spec.shape)
    if len(raw) < header_len:
        raise DataError(f"{path} ends inside its IDX header. {_REPLACE_HINT}")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(len(spec.shape)))
    payload = len(raw) - header_len
    if payload != math.prod(shape):
        raise DataError(
            f"{path} is truncated or padded: its header announces shape {shape} "
            f"({math.prod(shape)} bytes of data) but it holds {payload}. {_REPLACE_HINT}"
        )
    if verify:
        if shape != spec.shape:
            raise DataError(
                f"{path} holds shape {shape}, but the official {spec.name} holds {spec.shape}. "
                f"{_REPLACE_HINT} To use other data in the IDX format, set `data.verify: false`."
            )
        digest = hashlib.md5(raw).hexdigest()
        if spec.md5 is not None and digest != spec.md5:
            raise DataError(
                f"{path} differs from the official {spec.name}: its MD5 is {digest}, expected {spec.md5}. "
                f"{_REPLACE_HINT} To use other data in the IDX format, set `data.verify: false`."
            )
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8, offset=header_len).reshape(shape)


_REPLACE_HINT = "Delete it and download MNIST again (`data.download: true`), or copy the original file over it."


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as stream:
                return stream.read()
        return path.read_bytes()
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise DataError(f"{path} is not a valid gzip file ({error}); it is probably truncated. {_REPLACE_HINT}")
    except OSError as error:
        raise DataError(f"Cannot read {path}: {error.strerror or error}.")
