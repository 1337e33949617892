"""Finding the MNIST files (both layouts), clear messages when they are missing, atomic downloads."""

import functools
import hashlib
import http.server
import threading

import pytest
from torchvision.datasets import MNIST

from conftest import assert_user_error, write_mnist_like
from digitlab.data.files import MNIST_FILES, download_mnist, locate, resolve_data_dir
from digitlab.errors import DataError
from filesystems import full_filesystem
from ports import free_port

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
    with pytest.raises(DataError, match="Could not download t10k-images-idx3-ubyte.gz .*does not match .*MD5"):
        download_mnist(data_dir, [MNIST_FILES["test_images"]])
    assert list(tmp_path.iterdir()) == [local_mirror]  # not even an empty data/MNIST/raw/


def test_files_that_landed_stay_when_a_later_one_fails(tmp_path, local_mirror):
    (local_mirror / "t10k-labels-idx1-ubyte.gz").unlink()  # the mirror answers 404 for it
    data_dir = tmp_path / "data"
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.*HTTP Error 404"):
        locate(data_dir, ALL, download=True)
    assert sorted(p.name for p in (data_dir / "MNIST" / "raw").iterdir()) == [
        "t10k-images-idx3-ubyte.gz", "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]


def test_a_download_that_cannot_be_written_removes_the_folders_it_made(tmp_path, local_mirror):
    with full_filesystem(tmp_path / "full") as full:
        with pytest.raises(DataError, match=r"Could not write the downloaded .*No space left on device"):
            locate(full / "data", ALL, download=True)
        assert [p.name for p in full.iterdir()] == ["filler"]


@pytest.fixture
def offline(monkeypatch):
    """torchvision's mirrors replaced by a port of 127.0.0.1 where nothing listens: every download is refused."""
    port = free_port()
    monkeypatch.setattr(MNIST, "mirrors", [f"http://127.0.0.1:{port}/", f"http://localhost:{port}/"])
    return port


def test_offline_with_a_wrong_data_dir_says_where_it_looked_why_the_download_failed_and_what_to_do(
        tmp_path, offline, digitlab_main):
    wrong = tmp_path / "mnsit"
    result = digitlab_main("fit", "--model", "mlp", "--data.data_dir", str(wrong), cwd=tmp_path)
    assert_user_error(
        result,
        f"MNIST files not found: {wrong} does not exist (looked in it and in {wrong / 'MNIST' / 'raw'}",
        f"Downloading them from torchvision's mirrors failed: [Errno 111] Connection refused (127.0.0.1:{offline}, "
        f"localhost:{offline}).",
        "Point `--data.data_dir` (or $DIGITLAB_DATA_DIR) at the folder that holds the MNIST files",
        f"copy them into {wrong}, or run again online to download them.",
    )
    assert not wrong.exists()  # not even an empty MNIST/raw/ in it
    assert [path for path in tmp_path.rglob("*") if path.name != "lightning_logs"] == []  # and no run folder


@pytest.mark.parametrize("existing", ["data", "data/MNIST"])
def test_a_failed_download_keeps_the_folders_that_were_there(tmp_path, offline, existing):
    (tmp_path / existing).mkdir(parents=True)
    with pytest.raises(DataError, match=r"holds no MNIST file .*Connection refused"):
        locate(tmp_path / "data", ALL, download=True)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == sorted(
        {"data", existing})
