"""A run on a full or read-only file system (issue 20, item 10): a fit that cannot write its run folder (a disk
full from the start or filling while the run sets up, a file-size limit, a read-only mount, a folder that is
not the user's) is one paragraph naming the folder, its file system and the fix, no traceback, and leaves no
run folder; a checkpoint on a read-only file system is still evaluated, logged elsewhere, saying where.

Real small file systems (tmpfs, read-only bind mounts) need root; without it these tests skip with the reason.
"""

from __future__ import annotations

import errno
import os
import re
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SMALL_RUN, digitlab_here, write_mnist_like
from filesystems import full_filesystem, read_only_view, remount, tmpfs
from tensorboard_events import scalars


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_mnist_like(tmp_path_factory.mktemp("data"), train=100, test=20)


def fit_args(data: Path, *more: str) -> list[str]:
    return ["--model", "mlp", "--data.data_dir", str(data), *SMALL_RUN, "--trainer.max_epochs", "1",
            "--pictures", "false", *more]


def files_under(folder: Path) -> dict[str, int]:
    """Every file and folder under `folder` (relative name -> size; -1 for a folder)."""
    return {str(p.relative_to(folder)): -1 if p.is_dir() else p.stat().st_size for p in folder.rglob("*")}


def assert_storage_paragraph(result, code: int, reason: str, mount: Path, folder: Path) -> None:
    """Exit `code`; the last thing printed is one paragraph naming the reason, the folder, its file system and
    the fix; no traceback (nor a thread's)."""
    assert result.returncode == code, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "Exception in thread" not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("digitlab: error:"), result.stderr[-3000:]
    for fragment in (reason, str(folder), f"on the file system mounted at {mount})", "--trainer.default_root_dir"):
        assert fragment in last, f"{fragment!r} not in {last!r}"


def fit_into(where: str, mount: Path, root: Path, data: Path, tmp_path: Path, digitlab_main, monkeypatch):
    """`digitlab fit` writing its runs under `root`, on `mount`: run from inside the mount with no root given
    (``where`` "working-folder"), or from `tmp_path` with ``--trainer.default_root_dir root``. Leaves the mount."""
    cwd = mount if where == "working-folder" else tmp_path
    more = [] if where == "working-folder" else ["--trainer.default_root_dir", str(root)]
    result = digitlab_main("fit", *fit_args(data, *more), cwd=cwd)
    monkeypatch.chdir(tmp_path)  # out of the mount, which is unmounted next
    return result


# --- a full disk -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["the-mount", "below-it", "beside-an-earlier-run", "working-folder"])
def test_a_disk_full_when_fit_starts_is_one_paragraph_and_leaves_no_run(where, data, tmp_path, digitlab_main,
                                                                        monkeypatch):
    with full_filesystem(tmp_path / "full") as full:
        root = full / "a" / "b" if where == "below-it" else full
        if where == "beside-an-earlier-run":  # an earlier run on that disk stays as it was
            (full / "filler").unlink()
            earlier = full / "lightning_logs" / "version_0"
            earlier.mkdir(parents=True)
            (earlier / "config.yaml").write_text("model: {}\n")
            with (full / "filler").open("wb", buffering=0) as stream, pytest.raises(OSError):
                while True:
                    stream.write(b"\0" * 4096)
        before = files_under(full)
        result = fit_into(where, full, root, data, tmp_path, digitlab_main, monkeypatch)
        assert_storage_paragraph(result, 1, "No space left on device", full, root / "lightning_logs")
        assert "free some space" in result.stderr
        left = files_under(full)
        assert {name: size for name, size in left.items() if not name.startswith("a")} == before
        assert not any(size >= 0 for name, size in left.items() if name.startswith("a"))  # folders at most


@pytest.mark.parametrize("free_pages", [1, 2])
def test_a_disk_that_fills_while_the_run_sets_up_is_one_paragraph(free_pages, data, tmp_path, digitlab_main):
    """Room for the first writes only: the events file (written by TensorBoard's own thread), hparams.yaml or
    config.yaml meets the full disk, whichever comes first with this much room."""
    with full_filesystem(tmp_path / "full", free_pages=free_pages) as full:
        result = digitlab_main("fit", *fit_args(data, "--trainer.default_root_dir", str(full)), cwd=tmp_path)
        assert_storage_paragraph(result, 1, "No space left on device", full, full / "lightning_logs")
        assert "The run did not start, and its folder is removed" in result.stderr
        assert files_under(full) == {"filler": (16 - free_pages) * 4096}


@pytest.mark.slow  # a process of its own, with a file-size limit
@pytest.mark.parametrize("limit", [1024, 4000])
def test_a_file_size_limit_is_one_paragraph(limit, data, tmp_path):
    """``ulimit -f``: a write past the limit fails with EFBIG (Python ignores SIGXFSZ)."""
    root = tmp_path / "runs"
    command = [sys.executable, "-m", "digitlab", "fit", *fit_args(data, "--trainer.default_root_dir", str(root))]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "DIGITLAB_DISABLE_PLUGINS": "1"},
                            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert re.search(r"File too large\. .*raise the file-size limit \(`ulimit -f`\)", result.stderr.splitlines()[-1])
    assert not any(root.rglob("version_*"))


# --- a file system that takes no new file --------------------------------------------------------------------

@pytest.mark.parametrize("where", ["read-only-tmpfs", "below-it", "read-only-bind-of-runs", "working-folder"])
def test_a_fit_into_a_read_only_file_system_is_one_paragraph(where, data, tmp_path, digitlab_main, monkeypatch):
    source = tmp_path / "source"
    earlier = source / "lightning_logs" / "version_0"
    earlier.mkdir(parents=True)
    (earlier / "config.yaml").write_text("model: {}\n")
    with (read_only_view(source, tmp_path / "ro") if where == "read-only-bind-of-runs" else
          tmpfs(tmp_path / "ro", "ro")) as ro:
        before = files_under(ro)
        root = ro / "below" if where == "below-it" else ro
        result = fit_into(where, ro, root, data, tmp_path, digitlab_main, monkeypatch)
        assert_storage_paragraph(result, 2, "Read-only file system", ro, root / "lightning_logs")
        assert "remount a read-only file system read-write" in result.stderr
        assert files_under(ro) == before


@pytest.mark.parametrize("code", [errno.EACCES, errno.EPERM])
def test_runs_folder_under_a_folder_without_permission_is_one_paragraph(code, data, tmp_path, digitlab_main,
                                                                         monkeypatch):
    """A folder that is not the user's (root writes anywhere, so the refusal is the file system's, simulated)."""
    locked = tmp_path / "locked"
    locked.mkdir()
    mkdir = Path.mkdir

    def refusing(self, *args, **kwargs):
        if locked in (self, *self.parents):
            raise PermissionError(code, os.strerror(code), str(self))
        return mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", refusing)
    result = digitlab_main("fit", *fit_args(data, "--trainer.default_root_dir", str(locked / "runs")), cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert f"cannot write into {locked / 'runs' / 'lightning_logs'}" in result.stderr
    assert os.strerror(code) in result.stderr and "fix the folder's permissions" in result.stderr
    assert list(locked.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a folder of mode 555")
def test_lightning_logs_in_a_folder_of_mode_555_is_one_paragraph(data, tmp_path, digitlab_main):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    result = digitlab_main("fit", *fit_args(data, "--trainer.default_root_dir", str(locked)), cwd=tmp_path)
    assert result.returncode == 2 and "Permission denied" in result.stderr, result.stderr[-3000:]
    assert list(locked.iterdir()) == []


# --- a checkpoint on a read-only file system ------------------------------------------------------------------

@pytest.fixture(scope="module")
def read_only_run(data, tmp_path_factory):
    """One mlp epoch fitted on a tmpfs (run with no default_root_dir, as most are), then made read-only: its
    run folder, the test accuracy its fit printed, and the validation accuracy it logged."""
    mount = tmp_path_factory.mktemp("stored") / "disk"
    with tmpfs(mount, "size=16m"):
        fitted = digitlab_here("fit", *fit_args(data, "--seed_everything", "0"), cwd=mount)
        assert fitted.returncode == 0, fitted.stderr[-3000:]
        run = mount / "lightning_logs" / "version_0"
        test_acc = float(re.search(r"Test accuracy: ([\d.]+)", fitted.stdout).group(1))
        val_acc = scalars(run)["val/acc"][-1]
        remount(mount, "ro")
        yield run, test_acc, val_acc


@pytest.mark.parametrize("subcommand", ["test", "validate"])
def test_a_checkpoint_on_a_read_only_file_system_is_evaluated_and_logged_elsewhere(
        subcommand, read_only_run, tmp_path, digitlab_main):
    run, test_acc, val_acc = read_only_run
    before = files_under(run.parent)
    result = digitlab_main(subcommand, "--ckpt_path", str(run / "checkpoints" / "last.ckpt"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"digitlab: the checkpoint's run folder {run} cannot be written (Read-only file system), so this " \
           f"{subcommand} is logged in lightning_logs/{subcommand}_0" in result.stderr
    logged = tmp_path / "lightning_logs" / f"{subcommand}_0"
    assert (logged / "config.yaml").is_file()
    if subcommand == "test":
        assert f"Test accuracy: {test_acc:.4f}" in result.stdout
        assert scalars(logged)["test/acc"] == [pytest.approx(test_acc, abs=5e-5)]
    else:
        assert scalars(logged)["val/acc"] == [pytest.approx(val_acc)]
    assert files_under(run.parent) == before


def test_a_checkpoint_on_a_read_only_file_system_is_predicted_with_nothing_written(read_only_run, tmp_path,
                                                                                   digitlab_main):
    run, test_acc, _ = read_only_run
    before = files_under(run.parent)
    result = digitlab_main("predict", "--ckpt_path", str(run / "checkpoints" / "last.ckpt"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Accuracy against the labels: {test_acc:.4f}" in result.stdout
    assert files_under(run.parent) == before and list(tmp_path.iterdir()) == []  # a predict logs nothing


def test_a_read_only_checkpoint_with_nowhere_else_to_log_is_one_paragraph(read_only_run, tmp_path, digitlab_main):
    run, _, _ = read_only_run
    with tmpfs(tmp_path / "also-ro", "ro") as also:
        result = digitlab_main("test", "--ckpt_path", str(run / "checkpoints" / "last.ckpt"),
                               "--trainer.default_root_dir", str(also), cwd=tmp_path)
    assert_storage_paragraph(result, 2, "Read-only file system", also, also / "lightning_logs")
    assert f"The checkpoint's run folder {run} cannot be written" in result.stderr
    assert list(tmp_path.iterdir()) == [tmp_path / "also-ro"] and list(also.iterdir()) == []


def test_a_checkpoint_on_a_read_only_file_system_is_exported(read_only_run, tmp_path, digitlab_main):
    """export writes into the current folder, never beside the checkpoint."""
    run, _, _ = read_only_run
    result = digitlab_main("export", "--ckpt_path", str(run / "checkpoints" / "last.ckpt"), "--format",
                           "torchscript", "--output", "model.pt", "--data.verify", "false", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "model.pt").is_file()

