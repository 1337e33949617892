"""Loggers with an explicit version (`TensorBoardLogger(version=5)`, a CSVLogger's string version): the folder is
claimed with one mkdir before any logger writes, so of two runs started together one trains and the other is
refused in one paragraph, writing nothing; a requeued SLURM job resumes in its own run folder."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import SMALL_RUN, assert_user_error, run_digitlab, write_mnist_like

QUICK = ["--model", "centroid", *SMALL_RUN, "--data.val_split", "0", "--trainer.max_epochs", "1",
         "--test_after_fit", "false"]
LOGGERS = {"TensorBoardLogger": "events.out.tfevents.*", "CSVLogger": "hparams.yaml"}  # a file each run writes once


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_mnist_like(tmp_path_factory.mktemp("data"), train=200, test=50)


def logger_config(folder: Path, *loggers: tuple[str, object]) -> Path:
    config = folder / "loggers.yaml"
    config.write_text(yaml.safe_dump({"trainer": {"logger": [
        {"class_path": f"lightning.pytorch.loggers.{kind}", "init_args": {"save_dir": ".", "version": version}}
        for kind, version in loggers]}}))
    return config


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


@pytest.mark.slow  # two `digitlab fit` processes at once
@pytest.mark.parametrize("kind, version, folder_name", [  # each logger, each kind of version
    ("TensorBoardLogger", 5, "version_5"), ("CSVLogger", "mine", "mine")])
def test_two_fits_started_together_never_share_an_explicit_version(tmp_path, data, kind, version, folder_name):
    config = logger_config(tmp_path, (kind, version))
    script = Path(sys.executable).with_name("digitlab")
    env = {**os.environ, "DIGITLAB_DISABLE_PLUGINS": "1"}
    command = [str(script), "fit", "--config", str(config), "--data.data_dir", str(data), *QUICK]
    runs = [subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for _ in range(2)]
    results = [(run, run.communicate(timeout=600)[1]) for run in runs]
    codes = sorted(run.returncode for run, _ in results)
    assert codes == [0, 2], [err[-3000:] for _, err in results]
    refused = next(err for run, err in results if run.returncode == 2)
    assert "Traceback" not in refused and "never writes into an earlier run" in refused, refused[-3000:]
    assert str(Path("lightning_logs") / folder_name) in refused
    logs = tmp_path / "lightning_logs"
    assert [p.name for p in logs.iterdir()] == [folder_name]  # the refused run made no folder of its own
    run = logs / folder_name
    assert len(list(run.glob(LOGGERS[kind]))) == 1, files_under(run)  # nothing of the refused run's in it
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "config.yaml").is_file()
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize("kind", LOGGERS)
def test_an_existing_explicit_version_folder_is_refused_even_empty(tmp_path, data, kind, digitlab_main):
    # An empty folder may be another run's, claimed a moment ago and not yet written.
    (tmp_path / "lightning_logs" / "mine").mkdir(parents=True)
    config = logger_config(tmp_path, (kind, "mine"))
    result = digitlab_main("fit", "--config", str(config), "--data.data_dir", str(data), *QUICK, cwd=tmp_path)
    assert_user_error(result, str(Path("lightning_logs") / "mine"), "never writes into an earlier run")
    assert files_under(tmp_path / "lightning_logs") == []  # the refused run wrote nothing


def test_loggers_with_one_explicit_version_share_its_folder(tmp_path, data, digitlab_main):
    config = logger_config(tmp_path, ("TensorBoardLogger", 5), ("CSVLogger", 5))
    result = digitlab_main("fit", "--config", str(config), "--data.data_dir", str(data), *QUICK, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "lightning_logs" / "version_5"
    assert (run / "hparams.yaml").is_file() and list(run.glob("events.out.tfevents.*"))
    again = digitlab_main("fit", "--config", str(config), "--data.data_dir", str(data), *QUICK, cwd=tmp_path)
    assert_user_error(again, str(Path("lightning_logs") / "version_5"))


SLURM = {"SLURM_JOB_ID": "77", "SLURM_JOB_NAME": "train", "SLURM_NTASKS": "1"}
REQUEUED = {**SLURM, "SLURM_RESTART_COUNT": "1"}


def epochs_in(checkpoint: Path) -> int:
    return torch.load(checkpoint, map_location="cpu", weights_only=True)["epoch"] + 1


@pytest.mark.console_script  # SLURM's signal handlers are set per process
def test_a_requeued_slurm_job_resumes_in_its_own_run_folder(tmp_path, data):
    # `--ckpt_path last` or none: the same (tests/test_restart_folders.py); a requeue after a notice: test_requeue.py
    resume = ["--ckpt_path", "last"]
    mlp = ["--model", "mlp", "--data.data_dir", str(data), *SMALL_RUN, "--test_after_fit", "false"]
    first = run_digitlab("fit", *mlp, "--trainer.max_epochs", "1", cwd=tmp_path, env=SLURM)
    assert first.returncode == 0, first.stderr[-3000:]
    run = tmp_path / "lightning_logs" / "version_77"
    config = (run / "config.yaml").read_text()
    # A newer run of another job in the same folder: `last` still means this job's own last.ckpt.
    other = run_digitlab("fit", *mlp, "--trainer.max_epochs", "1", cwd=tmp_path, env={**SLURM, "SLURM_JOB_ID": "78"})
    assert other.returncode == 0, other.stderr[-3000:]
    other_files = files_under(tmp_path / "lightning_logs" / "version_78")
    again = run_digitlab("fit", *mlp, "--trainer.max_epochs", "2", *resume, cwd=tmp_path, env=REQUEUED)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Traceback" not in again.stderr
    assert f"resumes from {Path('lightning_logs') / 'version_77' / 'checkpoints' / 'last.ckpt'}" in again.stderr
    assert epochs_in(run / "checkpoints" / "last.ckpt") == 2  # one more epoch, on top of the first start's
    assert (run / "config.yaml").read_text() == config  # the first start's config is kept
    assert sorted(p.name for p in (tmp_path / "lightning_logs").iterdir()) == ["version_77", "version_78"]
    assert files_under(tmp_path / "lightning_logs" / "version_78") == other_files  # nothing stray in another run
