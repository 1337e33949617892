"""Which run folder a start continues in: a requeued SLURM job's own, a restarted TorchElastic group's (found by
its launch), never another job's; and the lock that keeps a second job out of a run folder in use."""

from __future__ import annotations

import fcntl
import os

import pytest

from digitlab.errors import UserError
from digitlab.runs import ownership
from digitlab.runs.folders import claim_run_folder, release_if_empty
from digitlab.runs.restarts import (continued_folder, launch, launched_folder, restart_resume, restarted,
                                     restarts_left, resume_hint)

ELASTIC = {"TORCHELASTIC_RUN_ID": "none", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29511"}


@pytest.fixture(autouse=True)
def no_launcher(monkeypatch):
    for name in list(os.environ):
        if name.startswith(("SLURM_", "TORCHELASTIC_")) or name in ("MASTER_ADDR", "MASTER_PORT"):
            monkeypatch.delenv(name)


def start(monkeypatch, restart: int, **variables: str) -> None:
    for name, value in {**ELASTIC, "TORCHELASTIC_RESTART_COUNT": str(restart), **variables}.items():
        monkeypatch.setenv(name, value)


def test_a_launch_is_its_rendezvous_id_or_else_its_master(monkeypatch):
    assert launch() is None and not restarted()
    start(monkeypatch, 0)
    assert launch() == "torchelastic run at 127.0.0.1:29511" and not restarted()
    start(monkeypatch, 2, TORCHELASTIC_RUN_ID="abc-123")
    assert launch() == "torchelastic run abc-123" and restarted()


def test_a_restarted_group_continues_in_the_folder_its_first_start_claimed(monkeypatch, tmp_path):
    logs = tmp_path / "lightning_logs"
    start(monkeypatch, 0)
    first = claim_run_folder("fit", logs, None)
    ownership.release(first)
    start(monkeypatch, 0, MASTER_PORT="29999")  # another launch, later: a newer folder of its own
    other = claim_run_folder("fit", logs, None)
    ownership.release(other)
    assert (first.name, other.name) == ("version_0", "version_1")
    assert (first / "launch").read_text() == "torchelastic run at 127.0.0.1:29511\n"
    start(monkeypatch, 1)
    assert launched_folder(logs) == continued_folder(logs) == first
    assert claim_run_folder("fit", logs, None) == first  # no new folder
    ownership.release(first)
    assert sorted(p.name for p in logs.iterdir()) == ["version_0", "version_1"]
    start(monkeypatch, 1, MASTER_PORT="30001")  # a restart whose first start claimed nothing: a new folder
    assert launched_folder(logs) is None
    fresh = claim_run_folder("fit", logs, None)
    assert fresh.name == "version_2"
    ownership.release(fresh)


def test_a_restart_resumes_from_its_own_last_checkpoint_not_the_newest_run(monkeypatch, tmp_path, capsys):
    logs = tmp_path / "lightning_logs"
    trainer = {"default_root_dir": str(tmp_path)}
    start(monkeypatch, 0)
    first = claim_run_folder("fit", logs, None)
    ownership.release(first)
    start(monkeypatch, 1)
    assert restart_resume(None, trainer) is None  # stopped before its first checkpoint: from the beginning
    (first / "checkpoints").mkdir()
    (first / "checkpoints" / "last.ckpt").write_bytes(b"x")
    (logs / "version_7" / "checkpoints").mkdir(parents=True)  # a newer run of another job
    (logs / "version_7" / "checkpoints" / "last.ckpt").write_bytes(b"x")
    assert restart_resume("last", trainer) == str(first / "checkpoints" / "last.ckpt")
    assert "restarted (1 of torchrun's --max-restarts), resumes from" in capsys.readouterr().err
    # The first start's --ckpt_path (another run's checkpoint it resumed from): its own progress is newer.
    assert restart_resume("other.ckpt", trainer) == str(first / "checkpoints" / "last.ckpt")
    (first / "checkpoints" / "last.ckpt").unlink()
    assert restart_resume("other.ckpt", trainer) == "other.ckpt"  # nothing of its own yet: as its first start
    start(monkeypatch, 0)
    assert restart_resume(None, trainer) is None  # a first start resumes nothing by itself


def test_a_requeued_slurm_job_continues_in_its_job_folder(monkeypatch, tmp_path):
    logs = tmp_path / "lightning_logs"
    for name, value in {"SLURM_JOB_ID": "55", "SLURM_NTASKS": "1", "SLURM_JOB_NAME": "train"}.items():
        monkeypatch.setenv(name, value)
    folder = claim_run_folder("fit", logs, None)
    ownership.release(folder)
    assert folder == logs / "version_55"
    with pytest.raises(UserError, match="another SLURM job with id 55"):  # the same id, not requeued
        claim_run_folder("fit", logs, None)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert continued_folder(logs) == folder and claim_run_folder("fit", logs, None) == folder
    ownership.release(folder)


def test_a_folder_in_use_is_refused_and_free_again_once_released(tmp_path):
    folder = tmp_path / "version_0"
    folder.mkdir()
    ownership.hold(folder)
    assert "process" in (folder / ".lock").read_text()
    descriptor = os.open(folder / ".lock", os.O_RDWR)  # another process's view: a lock of its own
    with pytest.raises(BlockingIOError):
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    ownership.release(folder)
    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released: free
    with pytest.raises(UserError, match=rf"The run folder {folder} is in use by process {os.getpid()}"):
        ownership.hold(folder)  # held by "another job" now: refused
    os.close(descriptor)
    ownership.hold(folder)
    ownership.release(folder)


def test_a_claimed_folder_that_holds_only_its_markers_is_removed_on_failure(monkeypatch, tmp_path):
    logs = tmp_path / "lightning_logs"
    start(monkeypatch, 0)
    folder = claim_run_folder("fit", logs, None)
    assert {p.name for p in folder.iterdir()} == {".lock", "launch"}
    release_if_empty(folder)
    assert not logs.exists()


def test_a_stopped_fit_under_torchrun_says_the_restart_resumes_it(monkeypatch):
    assert not restarts_left() and resume_hint() == "resume with `--ckpt_path last`"
    start(monkeypatch, 0, TORCHELASTIC_MAX_RESTARTS="1")
    assert restarts_left() and "torchrun restarts the run" in resume_hint()
    start(monkeypatch, 1, TORCHELASTIC_MAX_RESTARTS="1")  # the last restart: nothing restarts it again
    assert not restarts_left() and "--ckpt_path last" in resume_hint()
