"""Hostile files are refused before memory grows: IDX headers are bounded before their payload is read, and
each command refuses a hostile file with a peak RSS under `MAX_RSS`, measured in a process of its own."""

import gzip
import re
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import idx_bytes, synthetic_digits
from digitlab.data.files import MNIST_FILES
from digitlab.data.idx import read_idx
from digitlab.errors import DataError

MAX_RSS = 1_500 * 1024 * 1024  # bytes
MEASURE = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
           "sys.stderr.write(r.stderr); print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def lying_idx(path: Path, shape: tuple[int, ...], payload: int = 1 << 20) -> Path:
    """An IDX file whose header announces `shape` but which holds `payload` zero bytes."""
    header = bytes([0, 0, 0x08, len(shape)]) + b"".join(d.to_bytes(4, "big") for d in shape)
    data = header + bytes(payload)
    path.write_bytes(gzip.compress(data, compresslevel=1) if path.suffix == ".gz" else data)
    return path


@pytest.mark.parametrize("key, shape", [
    ("train_images", (3_000_000, 28, 28)), ("train_images", (60_001, 28, 28)), ("train_images", (100, 280, 28)),
    ("test_images", (10_000, 28, 2_800_000)), ("train_labels", (4_000_000_000,)), ("test_labels", (10_001,)),
])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_a_lying_header_is_refused_with_verify_off(tmp_path, key, shape, suffix):
    path = lying_idx(tmp_path / f"{MNIST_FILES[key].name}{suffix}", shape)
    with pytest.raises(DataError, match=f"announces shape {re.escape(str(shape))}"):
        read_idx(path, MNIST_FILES[key], verify=False)


def test_smaller_data_of_mnist_size_still_loads_with_verify_off(tmp_path):
    images, _ = synthetic_digits(30)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(images)))
    assert read_idx(path, MNIST_FILES["train_images"], verify=False).shape == (30, 28, 28)


def peak_rss(*args: str, cwd: Path) -> tuple[int, int, str]:
    """(exit code, peak RSS in bytes, stderr) of `digitlab ARGS` in a new process."""
    result = subprocess.run([sys.executable, "-c", MEASURE, sys.executable, "-m", "digitlab", *args],
                            cwd=cwd, capture_output=True, text=True, timeout=300)
    code, rss = map(int, result.stdout.split()[-2:])
    return code, rss * 1024, result.stderr


def assert_refused_in_bounds(code: int, rss: int, stderr: str, *fragments: str) -> None:
    assert code == 2 and "Traceback" not in stderr, stderr[-3000:]
    assert all(fragment in stderr for fragment in fragments), stderr[-3000:]
    assert len(stderr) < 20_000
    assert rss < MAX_RSS, f"peak RSS {rss / 2**20:.0f} MiB"


def long_list(items: int) -> str:
    return "model: lenet5\ntrainer:\n  max_epochs: [" + "7, " * items + "7]\n"


def alias_bomb(levels: int) -> str:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 9)}]" for n in range(1, levels)]
    return "\n".join(lines) + "\n"


@pytest.mark.slow
@pytest.mark.parametrize("text, why", [(long_list(3_000_000), "larger than"), (long_list(200_000), "expands to"),
                                       ("model: lenet5\n" + alias_bomb(9), "expands to")],
                         ids=["12 MB list", "list under the byte limit", "alias bomb"])
def test_fit_refuses_a_hostile_config_in_bounded_memory(tmp_path, text, why):
    (tmp_path / "config.yaml").write_text(text)
    assert_refused_in_bounds(*peak_rss("fit", "--config", "config.yaml", cwd=tmp_path), "config.yaml", why)


@pytest.mark.slow
def test_test_refuses_a_hostile_run_config_beside_the_checkpoint(tmp_path):
    run = tmp_path / "lightning_logs" / "version_0"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"not a checkpoint")
    (run / "config.yaml").write_text(long_list(3_000_000))
    code, rss, stderr = peak_rss("test", "--ckpt_path", str(run / "checkpoints" / "last.ckpt"), cwd=tmp_path)
    assert_refused_in_bounds(code, rss, stderr, "config.yaml", "larger than")


@pytest.mark.slow
@pytest.mark.parametrize("text, why", [
    ("space:\n  data.batch_size: {type: categorical, choices: [1, 2]}\n" + alias_bomb(9), "expands to"),
    ("space:\n  data.seed:\n    type: categorical\n    choices: [" + ", ".join(map(str, range(200_000))) + "]\n",
     "larger than"),
    ("space:\n  data.seed:\n    type: categorical\n    choices: [" + ", ".join(map(str, range(5_000))) + "]\n",
     "5,000 choices"),
], ids=["alias bomb", "200,000 choices", "5,000 choices"])
def test_sweep_refuses_a_hostile_sweep_file_in_bounded_memory(tmp_path, text, why):
    (tmp_path / "sweep.yaml").write_text(text)
    assert_refused_in_bounds(*peak_rss("sweep", "--sweep", "sweep.yaml", "--model", "lenet5", cwd=tmp_path),
                             "sweep.yaml", why)


@pytest.mark.slow
def test_report_blanks_a_hostile_run_config_in_bounded_memory(tmp_path):
    run = tmp_path / "lightning_logs" / "version_0"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(long_list(3_000_000))
    (run / "hparams.yaml").write_text("{}\n")
    code, rss, stderr = peak_rss("report", "lightning_logs", cwd=tmp_path)
    assert "Traceback" not in stderr and code in (0, 2), stderr[-3000:]
    assert rss < MAX_RSS, f"peak RSS {rss / 2**20:.0f} MiB"


@pytest.mark.slow
def test_fit_refuses_lying_mnist_headers_in_bounded_memory(tmp_path):
    data = tmp_path / "mnist"
    data.mkdir()
    lying_idx(data / "train-images-idx3-ubyte.gz", (3_000_000, 28, 28), payload=64 << 20)
    lying_idx(data / "train-labels-idx1-ubyte.gz", (3_000_000,), payload=1 << 20)
    lying_idx(data / "t10k-images-idx3-ubyte.gz", (10_000, 28, 28), payload=10_000 * 784)
    lying_idx(data / "t10k-labels-idx1-ubyte.gz", (10_000,), payload=10_000)
    code, rss, stderr = peak_rss("fit", "--model", "centroid", "--data.data_dir", str(data), "--data.verify", "false",
                                 "--data.download", "false", "--trainer.max_epochs", "1", cwd=tmp_path)
    assert_refused_in_bounds(code, rss, stderr, "train-images-idx3-ubyte.gz", "announces shape (3000000, 28, 28)")
