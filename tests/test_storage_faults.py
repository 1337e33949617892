"""Storage and file-system faults (issue 20, item 10): a sweep's storage that is not a database, a sweep name
too long for a file name, a runs' folder that is not a folder, and event files that cannot be read. Each is one
paragraph (exit 2) or a one-line warning, never a traceback, and nothing is created beside a path digitlab does
not own."""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

import pytest

from conftest import SMALL_RUN, assert_user_error, write_mnist_like
from digitlab.errors import SkippedFileWarning
from sweep_helpers import fit_args, write_sweep_file


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_mnist_like(tmp_path_factory.mktemp("data"), train=100, test=20)


def one_paragraph(result) -> None:
    """The error is the last thing printed, one paragraph."""
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("digitlab: error:"), result.stderr[-3000:]


def listing(folder: Path) -> set[str]:
    return {path.name for path in folder.iterdir()}


def sweep(digitlab_main, tmp_path: Path, data: Path, *extra: str):
    sweep_file = write_sweep_file(tmp_path / "sweep.yaml", trials=1)
    cwd = tmp_path / "cwd"
    cwd.mkdir(exist_ok=True)
    return digitlab_main("sweep", "--sweep", str(sweep_file), *fit_args(data), *extra, cwd=cwd), cwd


# --- a SQLite storage that is not a database -----------------------------------------------------------------

@pytest.mark.parametrize("content", [
    b"root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n",
    b"SQLite format 2\0" + b"\0" * 100,  # almost the header
    b"\x89PNG\r\n\x1a\n" + b"\0" * 2000,
    b"x",  # shorter than the header
], ids=["passwd", "near-header", "binary", "one-byte"])
def test_a_file_that_is_not_a_database_is_refused_and_nothing_is_created_beside_it(
        content, data, tmp_path, digitlab_main):
    foreign = tmp_path / "etc" / "passwd"
    foreign.parent.mkdir()
    foreign.write_bytes(content)
    result, cwd = sweep(digitlab_main, tmp_path, data, "--storage", f"sqlite:///{foreign}")
    assert_user_error(result, str(foreign), "is not an SQLite database")
    one_paragraph(result)
    assert listing(foreign.parent) == {"passwd"}  # no passwd.lock, no journal
    assert foreign.read_bytes() == content
    assert list(cwd.iterdir()) == []


@pytest.mark.parametrize("database", ["missing/dir/x.db", "missing/x.db", "afile/x.db"])
def test_a_database_whose_folder_does_not_exist_is_refused_without_blaming_a_server(
        database, data, tmp_path, digitlab_main):
    (tmp_path / "afile").write_text("not a folder\n")
    before = listing(tmp_path)
    result, cwd = sweep(digitlab_main, tmp_path, data, "--storage", f"sqlite:///{tmp_path / database}")
    assert_user_error(result, "its folder", str((tmp_path / database).parent))
    assert "server" not in result.stderr
    one_paragraph(result)
    assert listing(tmp_path) == before | {"cwd", "sweep.yaml"} and list(cwd.iterdir()) == []


@pytest.mark.parametrize("kind", ["folder", "folder-symlink"])
def test_a_folder_as_the_database_is_refused(kind, data, tmp_path, digitlab_main):
    folder = tmp_path / "db"
    folder.mkdir()
    path = folder
    if kind == "folder-symlink":
        path = tmp_path / "link.db"
        path.symlink_to(folder)
    result, cwd = sweep(digitlab_main, tmp_path, data, "--storage", f"sqlite:///{path}")
    assert_user_error(result, "which is a folder, not a database file")
    one_paragraph(result)
    assert list(folder.iterdir()) == [] and not Path(f"{path}.lock").exists()
    assert list(cwd.iterdir()) == []


def test_a_fifo_as_the_database_is_refused(data, tmp_path, digitlab_main):
    fifo = tmp_path / "x.db"
    os.mkfifo(fifo)
    result, _ = sweep(digitlab_main, tmp_path, data, "--storage", f"sqlite:///{fifo}")
    assert_user_error(result, "is not a regular file")
    assert not Path(f"{fifo}.lock").exists()


def test_an_existing_sqlite_database_is_still_accepted(tmp_path):
    """The header check lets real databases (and new or empty files) through."""
    from digitlab.sweep.storage import check_sqlite_file

    real = tmp_path / "real.db"
    with sqlite3.connect(real) as connection:
        connection.execute("CREATE TABLE t (x)")
    empty = tmp_path / "empty.db"
    empty.touch()
    for path in (real, empty, tmp_path / "new.db"):
        check_sqlite_file(f"sqlite:///{path}")


# --- a sweep name too long for a file name -------------------------------------------------------------------

@pytest.mark.parametrize("length", [101, 256, 300, 5000])
def test_a_sweep_name_too_long_is_one_paragraph(length, data, tmp_path, digitlab_main):
    result, cwd = sweep(digitlab_main, tmp_path, data, "--name", "a" * length)
    assert_user_error(result, f"is {length} characters long", "at most 100")
    one_paragraph(result)
    assert "a" * 41 not in result.stderr  # the name is shown shortened
    assert list(cwd.iterdir()) == []


def test_a_sweep_file_whose_name_is_too_long_needs_a_name(data, tmp_path, digitlab_main):
    sweep_file = write_sweep_file(tmp_path / f"{'s' * 120}.yaml", trials=1)
    result = digitlab_main("sweep", "--sweep", str(sweep_file), *fit_args(data), cwd=tmp_path)
    assert_user_error(result, "is 120 characters long", "--name")


# --- the runs' folder is not a folder ------------------------------------------------------------------------

def make_not_a_folder(path: Path, kind: str) -> None:
    if kind == "file":
        path.write_text("not a folder\n")
    elif kind == "dangling-symlink":
        path.symlink_to(path.parent / "nowhere")
    elif kind == "fifo":
        os.mkfifo(path)


@pytest.mark.parametrize("kind", ["file", "dangling-symlink", "fifo"])
@pytest.mark.parametrize("subcommand", ["fit", "test", "sweep"])
def test_lightning_logs_not_a_folder_is_one_paragraph(kind, subcommand, data, tmp_path, digitlab_main):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    logs = cwd / "lightning_logs"
    make_not_a_folder(logs, kind)
    if subcommand == "sweep":
        sweep_file = write_sweep_file(tmp_path / "sweep.yaml", trials=1)
        result = digitlab_main("sweep", "--sweep", str(sweep_file), *fit_args(data), cwd=cwd)
    else:
        args = ["--model", "mlp", "--data.data_dir", str(data), *SMALL_RUN, "--trainer.max_epochs", "1"]
        result = digitlab_main(subcommand, *args, cwd=cwd)
    assert_user_error(result, "lightning_logs is not a folder", "--trainer.default_root_dir")
    one_paragraph(result)
    assert listing(cwd) == {"lightning_logs"}
    assert logs.is_symlink() or not logs.is_dir()  # left as it was


def test_a_file_above_the_runs_folder_is_named(data, tmp_path, digitlab_main):
    (tmp_path / "root").write_text("a file\n")
    result = digitlab_main("fit", "--model", "mlp", "--data.data_dir", str(data), *SMALL_RUN,
                           "--trainer.default_root_dir", str(tmp_path / "root" / "below"), cwd=tmp_path)
    assert_user_error(result, f"{tmp_path / 'root'} is not a folder")
    one_paragraph(result)


# --- event files that cannot be read ------------------------------------------------------------------------

def write_run(folder: Path, val_acc: float) -> Path:
    from torch.utils.tensorboard import SummaryWriter

    folder.mkdir(parents=True)
    with SummaryWriter(str(folder)) as writer:
        writer.add_scalar("val/acc", val_acc, 0)
        writer.add_scalar("test/acc", val_acc, 1)
    return folder


@pytest.fixture
def runs(tmp_path) -> Path:
    logs = tmp_path / "lightning_logs"
    write_run(logs / "version_0", 0.5)
    write_run(logs / "version_1", 0.75)
    return logs


def fail_on(monkeypatch, bad: Path, error: OSError) -> None:
    """Reading any event file of the run `bad` raises `error`, as a disk would (EIO) or a permission."""
    from tensorboard.backend.event_processing import event_accumulator

    reload = event_accumulator.EventAccumulator.Reload

    def failing(self):
        if Path(self.path).parent == bad:
            raise error
        return reload(self)

    monkeypatch.setattr(event_accumulator.EventAccumulator, "Reload", failing)


def report(digitlab_main, logs: Path):
    with pytest.warns(SkippedFileWarning) as warned:
        result = digitlab_main("report", str(logs), "--format", "csv", cwd=logs.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    return result, [str(w.message) for w in warned if w.category is SkippedFileWarning]


@pytest.mark.parametrize("error", [OSError(errno.EIO, "Input/output error"),
                                   PermissionError(errno.EACCES, "Permission denied"),
                                   OSError(errno.ESTALE, "Stale file handle")], ids=["EIO", "EACCES", "ESTALE"])
def test_an_unreadable_events_file_skips_its_run_with_a_warning(error, runs, monkeypatch, digitlab_main):
    fail_on(monkeypatch, runs / "version_1", error)
    result, messages = report(digitlab_main, runs)
    assert messages == [f"{runs / 'version_1'}: cannot be read ({error.strerror}); this run is left out of the "
                        "report"]
    assert "version_0" in result.stdout and "version_1" not in result.stdout


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file of mode 000")
def test_an_events_file_of_mode_000_skips_its_run(runs, digitlab_main):
    [events] = (runs / "version_1").glob("events.out.tfevents.*")
    events.chmod(0)
    try:
        result, messages = report(digitlab_main, runs)
    finally:
        events.chmod(0o644)
    assert len(messages) == 1 and "version_1" in messages[0]
    assert "version_0" in result.stdout


@pytest.mark.parametrize("kind", ["folder", "dangling-symlink"])
def test_an_events_path_that_is_not_a_file_does_not_stop_the_report(kind, runs, digitlab_main):
    events = runs / "version_1" / "events.out.tfevents.0.host.1.1"
    if kind == "folder":
        events.mkdir()
    else:
        events.symlink_to(runs / "nowhere")
    result = digitlab_main("report", str(runs), "--format", "csv", cwd=runs.parent)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "version_0" in result.stdout and "version_1" in result.stdout  # its readable events file is read
