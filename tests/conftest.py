"""Shared fixtures: tiny synthetic IDX files (the real parser runs on them) and the real MNIST folder."""

from __future__ import annotations

import contextlib
import gzip
import io
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from postgres_server import postgres  # noqa: F401 (a fixture: one PostgreSQL server for the modules that need one)

# Under pytest-xdist (`-n auto`, as pyproject.toml sets) every worker and the processes its tests start use one
# thread: two workers with PyTorch's default of a thread per core each would make the threads of one wait on
# those of the other, and the suite takes longer than on one worker.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

# A shell's background job (`cmd &`, as a CI runner may start the suite) starts with Ctrl-C ignored, and digitlab
# leaves a signal ignored that it was started ignoring: the tests of Ctrl-C would see nothing. They test a terminal's
# Ctrl-C, so this process (and what it starts) takes SIGINT as Python does by default.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

REPO = Path(__file__).resolve().parents[1]
MNIST_DIR = Path(os.environ.get("DIGITLAB_TEST_MNIST", REPO.parent / "shared" / "data" / "mnist"))

requires_mnist = pytest.mark.skipif(
    not (MNIST_DIR / "train-images-idx3-ubyte.gz").is_file(),
    reason=f"the real MNIST files are not in {MNIST_DIR} (set DIGITLAB_TEST_MNIST to their folder)",
)


# Two tiers. `pytest -m "not slow"` runs every module's logic in this process on tiny synthetic files
# (fits of a few batches); `pytest` runs everything. A test is `slow` when it trains real epochs on the real
# MNIST files or starts processes, servers, browsers or databases, which is when it
# - carries one of these marks,
SLOW_MARKS = {
    "e2e": "trains real epochs on the real MNIST files",
    "console_script": "runs the installed `digitlab` script in a new process",
    "gpu": "runs on a GPU, in new processes",
}
# - uses one of these fixtures (directly or through another fixture),
SLOW_FIXTURES = {
    "server": "test_serve: a `digitlab serve` process (LitServe and its workers)",
    "browser": "test_serve: a headless Chromium driven by Playwright",
    "postgres": "a PostgreSQL server (tests/postgres_server.py), and sweep workers in processes of their own",
}
# - or is marked `@pytest.mark.slow` itself, with the reason beside the mark (a whole module: `pytestmark`).


def pytest_collection_modifyitems(config, items) -> None:
    """Marks the slow tier (above); tests marked `gpu` are skipped, with the reason, where CUDA is not available."""
    for item in items:
        if SLOW_MARKS.keys() & set(item.keywords) or SLOW_FIXTURES.keys() & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU: torch.cuda.is_available() is False here")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def idx_bytes(array: torch.Tensor) -> bytes:
    """Encode a uint8 tensor as an IDX file (magic 0x0000080N, big-endian dimensions, raw bytes)."""
    header = bytes([0, 0, 0x08, array.dim()]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.contiguous().numpy().tobytes()


def write_idx(path: Path, array: torch.Tensor) -> Path:
    data = idx_bytes(array)
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as stream:
            stream.write(data)
    else:
        path.write_bytes(data)
    return path


def synthetic_digits(count: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Images in which digit k is a bright block at row 2k+1: easy to learn, cheap to make."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(count) % 10
    labels = labels[torch.randperm(count, generator=generator)]
    images = torch.randint(0, 40, (count, 28, 28), generator=generator, dtype=torch.uint8)
    for k in range(10):
        images[labels == k, 2 * k + 2 : 2 * k + 5, 4:24] = 230
    return images, labels.to(torch.uint8)


def write_mnist_like(folder: Path, train: int = 200, test: int = 50, gz: bool = True) -> Path:
    """Four synthetic files with the standard MNIST names in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    for prefix, count, seed in (("train", train, 1), ("t10k", test, 2)):
        images, labels = synthetic_digits(count, seed)
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels)
    return folder


@pytest.fixture
def synthetic_mnist(tmp_path: Path) -> Path:
    return write_mnist_like(tmp_path / "synthetic")


def run_digitlab(*args: str, cwd: Path, env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run the installed `digitlab` console script as a user would, in `cwd`, with plugins off by default."""
    full_env = {k: v for k, v in os.environ.items() if k != "DIGITLAB_DATA_DIR"}
    full_env.update({"DIGITLAB_DISABLE_PLUGINS": "1", **(env or {})})
    script = Path(sys.executable).with_name("digitlab")
    return subprocess.run(
        [str(script), *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )


# A quick run on the small synthetic files of `write_mnist_like` (200 training images): 40 for validation,
# batches of 32, no checks against the official files, no download, nothing drawn on the terminal.
SMALL_RUN = ["--data.verify", "false", "--data.val_split", "40", "--data.batch_size", "32", "--data.download", "false",
             "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def digitlab_here(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """`digitlab ARGS` in this process through `digitlab.cli.main`, as the `digitlab_main` fixture runs it, for
    module-scoped fixtures (which cannot use that fixture): what the console script would do, without a new
    interpreter. Plugins are off, as `run_digitlab` has them."""
    from digitlab.cli import main

    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(cwd)
        patch.delenv("DIGITLAB_DATA_DIR", raising=False)
        for key, value in {"DIGITLAB_DISABLE_PLUGINS": "1", **(env or {})}.items():
            patch.setenv(key, value)
        patch.setattr(sys, "argv", ["digitlab", *args])
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
                code = 0
            except SystemExit as exit:
                code = exit.code if isinstance(exit.code, int) else int(exit.code is not None)
    return subprocess.CompletedProcess(["digitlab", *args], code, out.getvalue(), err.getvalue())


def fit_one_mlp_epoch(cwd: Path, data: Path) -> Path:
    """`digitlab fit` of one mlp epoch on `data` in `cwd` (in this process): the run's folder."""
    result = digitlab_here("fit", "--model", "mlp", "--trainer.max_epochs", "1", "--data.data_dir", str(data),
                           *SMALL_RUN, cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return cwd / "lightning_logs" / "version_0"


def assert_user_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit code 2, every fragment named in stderr, and no traceback."""
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in result.stderr, f"{fragment!r} not in: {result.stderr[-3000:]}"


@pytest.fixture
def digitlab_main(monkeypatch, capsys):
    """`digitlab ARGS` run in this process through `digitlab.cli.main`, the function the console script
    calls: the same parsing, messages and exit codes, without starting a new interpreter for each case.
    Returns what `run_digitlab` returns; an unexpected exception (a bug) propagates to the test."""
    from digitlab.cli import main

    def run(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
        monkeypatch.chdir(cwd)
        monkeypatch.delenv("DIGITLAB_DATA_DIR", raising=False)
        for key, value in (env or {}).items():
            monkeypatch.setenv(key, value)
        monkeypatch.setattr(sys, "argv", ["digitlab", *args])
        capsys.readouterr()
        # Libraries' log handlers hold the stream of the moment they were made (an earlier test's capture).
        loggers = [logging.getLogger()] + [l for l in logging.root.manager.loggerDict.values()
                                           if isinstance(l, logging.Logger)]
        for handler in {h for logger in loggers for h in logger.handlers}:
            if type(handler) is logging.StreamHandler:
                monkeypatch.setattr(handler, "stream", sys.stderr)
        try:
            main()
            code = 0
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else int(exit.code is not None)
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(["digitlab", *args], code, out, err)

    return run
