"""Finding the MNIST files (both layouts), clear messages when they are missing, atomic downloads."""

import functools
import hashlib
import http.server
import threading

import pytest
from torchvision.datasets import MNIST

from conftest import write_mnist_like
from digitlab.data.files import MNIST_FILES, download_mnist, locate, resolve_data_dir
from digitlab.errors import DataError

ALL = list(MNIST_FILES)


def test_finds_flat_layout(synthetic_mnist):
    found = locate(synthetic_mnist, ALL, download=False)
    assert found["train_images"] == synthetic_mnist / "train-images-idx3-ubyte.gz"


def test_finds_torchvision_layout_with_extracted_files(tmp_path):
    raw = write_mnist_like(tmp_path / "MNIST" / "raw", gz=False)
    found = locate(tmp_path, ALL, download=False)
    assert found["test_labels"] == raw / "t10k-labels-idx1-ubyte"


def test_missing_files_are_named_with_where_and_how(tmp_path):
    write_mnist_like(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError) as error:
        locate(tmp_path, ALL, download=False)
    message = str(error.value)
    assert "t10k-labels-idx1-ubyte" in message and "train-images" not in message
    assert str(tmp_path) in message and str(tmp_path / "MNIST" / "raw") in message
    assert "--data.data_dir" in message


def test_a_file_given_as_data_dir_is_refused(tmp_path):
    not_a_folder = tmp_path / "mnist.zip"
    not_a_folder.write_text("")
    with pytest.raises(DataError, match="is a file, not a folder"):
        locate(not_a_folder, ALL, download=True)


def test_data_dir_comes_from_argument_then_environment_then_default(monkeypatch):
    monkeypatch.delenv("DIGITLAB_DATA_DIR", raising=False)
    assert str(resolve_data_dir(None)) == "data"
    monkeypatch.setenv("DIGITLAB_DATA_DIR", "/srv/mnist")
    assert str(resolve_data_dir(None)) == "/srv/mnist"
    assert str(resolve_data_dir("here")) == "here"


@pytest.fixture
def local_mirror(tmp_path, monkeypatch):
    """torchvision's mirrors replaced by an HTTP server on 127.0.0.1 serving synthetic archives."""
    mirror = write_mnist_like(tmp_path / "mirror")
    resources = [(p.name, hashlib.md5(p.read_bytes()).hexdigest()) for p in sorted(mirror.iterdir())]
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(mirror))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setattr(MNIST, "mirrors", [f"http://127.0.0.1:{server.server_address[1]}/"])
    monkeypatch.setattr(MNIST, "resources", resources)
    yield mirror
    server.shutdown()
    server.server_close()


def test_download_lands_in_torchvision_layout(tmp_path, local_mirror):
    data_dir = tmp_path / "data"
    found = locate(data_dir, ALL, download=True)
    raw = data_dir / "MNIST" / "raw"
    assert found["train_images"] == raw / "train-images-idx3-ubyte.gz"
    assert sorted(p.name for p in raw.iterdir()) == sorted(p.name for p in local_mirror.iterdir())


def test_failed_download_leaves_nothing_that_looks_valid(tmp_path, local_mirror):
    (local_mirror / "t10k-images-idx3-ubyte.gz").write_bytes(b"corrupted in transit")
    data_dir = tmp_path / "data"
    with pytest.raises(DataError, match="Could not download t10k-images-idx3-ubyte.gz"):
        download_mnist(data_dir, [MNIST_FILES["test_images"]])
    assert list((data_dir / "MNIST" / "raw").iterdir()) == []
