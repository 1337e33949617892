"""The IDX reader on tiny files written here: valid files load, every kind of damage is named."""

import gzip
import hashlib

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
