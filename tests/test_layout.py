"""What `--ckpt_path last` means, the same for every command: the newest run's last.ckpt under the runs' folder
of the command's config (trainer.default_root_dir, or the first file logger's save_dir/name)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from digitlab.errors import UserError
from digitlab.runs import layout
from digitlab.runs.folders import with_run_config


def last_checkpoint(root: Path, version: int, mtime: int) -> Path:
    path = root / f"version_{version}" / "checkpoints" / "last.ckpt"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"checkpoint")
    os.utime(path, (mtime, mtime))
    return path


@pytest.mark.parametrize(("trainer", "root"), [
    ({}, "lightning_logs"),
    ({"default_root_dir": "runs"}, "runs/lightning_logs"),
    ({"default_root_dir": "runs", "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger",
                                             "init_args": {"save_dir": "elsewhere", "name": "csv"}}}, "elsewhere/csv"),
    ({"logger": False}, "lightning_logs"),
])
def test_the_runs_folder_of_a_config(trainer, root):
    assert layout.logs_root(trainer) == Path(root)


def test_last_is_the_newest_last_checkpoint_by_time_not_by_number(tmp_path):
    last_checkpoint(tmp_path, 10, mtime=1_000)
    newest = last_checkpoint(tmp_path, 2, mtime=2_000)
    (tmp_path / "version_11" / "checkpoints").mkdir(parents=True)  # a run without last.ckpt does not count
    assert layout.newest_last_checkpoint(tmp_path) == newest


def test_last_without_any_run_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no run under .* has a checkpoints/last.ckpt"):
        layout.newest_last_checkpoint(tmp_path / "lightning_logs")


def test_an_evaluation_of_last_finds_the_run_config_under_the_given_root(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    checkpoint = last_checkpoint(tmp_path / "runs" / "lightning_logs", 0, mtime=1_000)
    (checkpoint.parent.parent / "config.yaml").write_text("model: lenet5\n")
    last_checkpoint(tmp_path / "lightning_logs", 0, mtime=2_000)  # newer, but not under the given root
    args = ["--ckpt_path", "last", "--trainer.default_root_dir", "runs"]
    assert with_run_config("test", args) == ["--config", str(checkpoint.parent.parent / "config.yaml"), *args]
    assert "using the run's config" in capsys.readouterr().err
    assert with_run_config("fit", args) == args  # fit resumes with the config it is given


def test_a_run_folder_of_a_checkpoint(tmp_path):
    checkpoint = last_checkpoint(tmp_path, 3, mtime=1_000)
    assert layout.run_folder_of(str(checkpoint)) is None  # no config.yaml or events: not a run
    (checkpoint.parent.parent / "config.yaml").write_text("{}")
    assert layout.run_folder_of(str(checkpoint)) == checkpoint.parent.parent.resolve()
    assert layout.run_folder_of(str(tmp_path / "loose.ckpt")) is None
