"""The IDX reader on tiny files written here: valid files load, every kind of damage is named."""

import gzip
import hashlib
import tracemalloc

import pytest
import torch

from conftest import idx_bytes, write_idx
from digitlab.data.idx import IdxSpec, read_idx
from digitlab.errors import DataError

IMAGES = torch.arange(3 * 4 * 5, dtype=torch.uint8).reshape(3, 4, 5)
SPEC = IdxSpec("tiny-images-idx3-ubyte", (3, 4, 5), hashlib.md5(idx_bytes(IMAGES)).hexdigest())


@pytest.mark.parametrize("name", ["tiny-images-idx3-ubyte", "tiny-images-idx3-ubyte.gz"])
def test_reads_plain_and_gzipped_files(tmp_path, name):
    path = write_idx(tmp_path / name, IMAGES)
    loaded = read_idx(path, SPEC)
    assert loaded.dtype == torch.uint8
    assert torch.equal(loaded, IMAGES)


def test_reads_labels(tmp_path):
    labels = torch.tensor([7, 2, 1, 0], dtype=torch.uint8)
    path = write_idx(tmp_path / "labels", labels)
    assert torch.equal(read_idx(path, IdxSpec("labels", (4,)), verify=True), labels)


def test_wrong_magic_is_named(tmp_path):
    path = write_idx(tmp_path / "labels-as-images", torch.zeros(60, dtype=torch.uint8))
    with pytest.raises(DataError, match="magic number 0x00000801.*expected 0x00000803"):
        read_idx(path, SPEC)


def test_truncated_payload_is_named(tmp_path):
    path = tmp_path / "tiny-images-idx3-ubyte"
    path.write_bytes(idx_bytes(IMAGES)[:-7])
    with pytest.raises(DataError, match="truncated") as error:
        read_idx(path, SPEC)
    assert str(path) in str(error.value)


def test_truncated_gzip_is_named(tmp_path):
    path = tmp_path / "tiny-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(IMAGES))[:-20])
    with pytest.raises(DataError, match="not a valid gzip file") as error:
        read_idx(path, SPEC)
    assert str(path) in str(error.value)


def test_altered_content_fails_the_checksum(tmp_path):
    altered = IMAGES.clone()
    altered[1, 2, 3] += 1
    path = write_idx(tmp_path / "tiny-images-idx3-ubyte", altered)
    with pytest.raises(DataError, match="differs from the official"):
        read_idx(path, SPEC)
    assert torch.equal(read_idx(path, SPEC, verify=False), altered)


def test_wrong_count_is_named_unless_verification_is_off(tmp_path):
    path = write_idx(tmp_path / "tiny-images-idx3-ubyte", IMAGES[:2])
    with pytest.raises(DataError, match=r"holds shape \(2, 4, 5\).*\(3, 4, 5\)"):
        read_idx(path, SPEC)
    assert read_idx(path, SPEC, verify=False).shape == (2, 4, 5)


def test_empty_file_is_named(tmp_path):
    path = tmp_path / "empty"
    path.write_bytes(b"")
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(path, SPEC)


def gzip_bomb(path, head: bytes, megabytes: int = 64):
    """A small .gz file that decompresses to `head` followed by `megabytes` MB of zeros."""
    with gzip.open(path, "wb", compresslevel=1) as stream:
        stream.write(head)
        for _ in range(megabytes):
            stream.write(bytes(1 << 20))
    return path


@pytest.mark.parametrize(
    "head, message",
    [
        (idx_bytes(torch.zeros(7, dtype=torch.uint8))[:8], "magic number 0x00000801"),  # a labels header
        (bytes([0, 0, 8, 3]) + b"".join(n.to_bytes(4, "big") for n in (10**6, 28, 28)), r"holds shape \(1000000"),
        (idx_bytes(IMAGES), "truncated or padded: .* holds more"),  # a right header, then 64 MB of padding
    ],
    ids=["wrong magic", "wrong shape", "padded"],
)
def test_a_gzip_bomb_is_refused_without_decompressing_it(tmp_path, head, message):
    path = gzip_bomb(tmp_path / "tiny-images-idx3-ubyte.gz", head)
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=message):
            read_idx(path, SPEC)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert path.stat().st_size < 1 << 20 and peak < 16 << 20, peak  # 64 MB inside, at most a few MB read
