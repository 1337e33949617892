"""Reading and verifying IDX files, the format MNIST ships in (http://yann.lecun.com/exdb/mnist/)."""

from __future__ import annotations

import gzip
import hashlib
import math
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

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

    The header is read first and checked before the payload, and no more than the payload it announces
    (plus one byte, to notice padding) is ever decompressed: a gzip bomb costs no more memory than the
    data it claims to hold (with `verify`, than the official file).
    """
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb") as stream:
            header = _read_header(stream, path, spec)
            shape = tuple(int.from_bytes(header[i : i + 4], "big") for i in range(4, len(header), 4))
            if verify and shape != spec.shape:
                raise DataError(
                    f"{path} holds shape {shape}, but the official {spec.name} holds {spec.shape}. "
                    f"{_REPLACE_HINT} To use other data in the IDX format, set `data.verify: false`."
                )
            _check_bounds(path, shape, spec)
            md5 = hashlib.md5(header) if verify and spec.md5 is not None else None
            payload = _read_at_most(stream, math.prod(shape) + 1, md5)
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise DataError(f"{path} is not a valid gzip file ({error}); it is probably truncated. {_REPLACE_HINT}")
    except OSError as error:
        raise DataError(f"Cannot read {path}: {error.strerror or error}.")
    if len(payload) != math.prod(shape):
        held = "more" if len(payload) > math.prod(shape) else len(payload)
        raise DataError(
            f"{path} is truncated or padded: its header announces shape {shape} "
            f"({math.prod(shape)} bytes of data) but it holds {held}. {_REPLACE_HINT}"
        )
    if md5 is not None:
        digest = md5.hexdigest()
        if digest != spec.md5:
            raise DataError(
                f"{path} differs from the official {spec.name}: its MD5 is {digest}, expected {spec.md5}. "
                f"{_REPLACE_HINT} To use other data in the IDX format, set `data.verify: false`."
            )
    if not payload:  # a dimension of 0: torch.frombuffer refuses an empty buffer
        return torch.empty(shape, dtype=torch.uint8)
    return torch.frombuffer(payload, dtype=torch.uint8).reshape(shape)


_REPLACE_HINT = "Delete it and download MNIST again (`data.download: true`), or copy the original file over it."
_CHUNK = 1 << 22  # bytes decompressed at a time: memory follows what the file holds, not what its header claims


def _read_header(stream: BinaryIO, path: Path, spec: IdxSpec) -> bytes:
    """The magic number and the dimensions, checked against `spec`'s type and rank."""
    magic = stream.read(4)
    if len(magic) < 4:
        raise DataError(f"{path} is not an IDX file: it holds only {len(magic)} bytes. {_REPLACE_HINT}")
    if int.from_bytes(magic, "big") != spec.magic:
        raise DataError(
            f"{path} has the IDX magic number 0x{int.from_bytes(magic, 'big'):08x}, expected 0x{spec.magic:08x} "
            f"for {spec.name} (unsigned bytes, {len(spec.shape)} dimensions). Is it the right file? {_REPLACE_HINT}"
        )
    dimensions = stream.read(4 * len(spec.shape))
    if len(dimensions) < 4 * len(spec.shape):
        raise DataError(f"{path} ends inside its IDX header. {_REPLACE_HINT}")
    return magic + dimensions


def _check_bounds(path: Path, shape: tuple[int, ...], spec: IdxSpec) -> None:
    """Other data (``verify: false``) must still hold pictures of MNIST's size and no more items than MNIST:
    a header is checked before a byte of its payload is read, so a lying one cannot make memory grow."""
    if shape[1:] != spec.shape[1:] or shape[0] > spec.shape[0]:
        size = "x".join(map(str, spec.shape[1:]))
        pictures = f" of {size} pixels" if size else ""
        raise DataError(
            f"{path} announces shape {shape}: digitlab reads at most {spec.shape[0]:,} items{pictures}, as in "
            f"the official {spec.name}. Is it the right file? {_REPLACE_HINT}"
        )


def _read_at_most(stream: BinaryIO, limit: int, md5: Any = None) -> bytearray:
    """Up to `limit` bytes of `stream`, read in chunks (a header may announce far more than the file holds),
    each added to `md5` (a `hashlib.md5()` object) when given.

    The chunks are hashed in a second thread while the next one is read: zlib and hashlib both release the
    GIL, so on two cores verifying the 47 MB of training images costs nearly no time beyond decompressing them.
    """
    data = bytearray()
    with ThreadPoolExecutor(max_workers=1) as hasher:  # one worker: chunks are hashed in order
        while len(data) < limit:
            chunk = stream.read(min(_CHUNK, limit - len(data)))
            if not chunk:
                break
            data += chunk
            if md5 is not None:
                hasher.submit(md5.update, chunk)
    return data
