"""Run folders: claimed atomically (runs started together never share one), evaluations kept with the run they
evaluate, nothing left behind by a command that fails, and a run's config.yaml working with every subcommand."""

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from conftest import SMALL_RUN, fit_one_mlp_epoch, write_mnist_like
from digitlab.runs.folders import claim



@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_mnist_like(tmp_path_factory.mktemp("data"), train=200, test=50)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data):
    """One fitted mlp run (lightning_logs/version_0) to evaluate."""
    cwd = tmp_path_factory.mktemp("trained")
    fit_one_mlp_epoch(cwd, data)
    return cwd


def test_threads_claiming_at_once_each_get_their_own_folder(tmp_path):
    claimed, start = [], threading.Barrier(8)

    def claim_one():
        start.wait()
        claimed.append(claim(tmp_path))

    threads = [threading.Thread(target=claim_one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(path.name for path in claimed) == sorted(f"version_{n}" for n in range(8))


@pytest.mark.slow  # three `digitlab fit` processes at once
def test_fits_started_together_in_one_folder_never_share_a_run(tmp_path, data):
    script = Path(sys.executable).with_name("digitlab")
    env = {**os.environ, "DIGITLAB_DISABLE_PLUGINS": "1"}
    command = [str(script), "fit", "--model", "centroid", "--data.data_dir", str(data), *SMALL_RUN,
               "--data.val_split", "0", "--trainer.max_epochs", "1", "--test_after_fit", "false"]
    runs = [subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(3)]
    for run in runs:
        _, err = run.communicate(timeout=600)
        assert run.returncode == 0, err[-3000:]
    folders = sorted((tmp_path / "lightning_logs").iterdir())
    assert [f.name for f in folders] == ["version_0", "version_1", "version_2"]
    for folder in folders:  # each run wrote its own config, events and checkpoint, and only those
        assert (folder / "config.yaml").is_file() and (folder / "checkpoints" / "last.ckpt").is_file()
        assert len(list(folder.glob("events.out.tfevents.*"))) == 1


def test_evaluations_are_kept_in_the_run_they_evaluate(trained, data, digitlab_main):
    run = trained / "lightning_logs" / "version_0"
    last = run / "checkpoints" / "last.ckpt"
    for subcommand in ("test", "test", "validate", "predict"):
        result = digitlab_main(subcommand, "--ckpt_path", str(last), "--data.data_dir", str(data), cwd=trained)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "using the run's config" in result.stderr  # found beside the checkpoint: no --config needed
    assert sorted(p.name for p in run.iterdir() if p.is_dir()) == [  # a predict logs nothing: no folder
        "checkpoints", "test_0", "test_1", "validate_0"]
    assert [p.name for p in (trained / "lightning_logs").iterdir()] == ["version_0"]  # no new version_N
    saved = yaml.safe_load((run / "test_1" / "config.yaml").read_text())
    assert saved["ckpt_path"] == str(last)


@pytest.mark.parametrize("subcommand", ["validate", "test", "predict"])
def test_a_runs_own_config_works_with_every_subcommand(trained, data, subcommand, digitlab_main):
    run = trained / "lightning_logs" / "version_0"
    result = digitlab_main(subcommand, "--config", str(run / "config.yaml"), "--ckpt_path", "last",
                           "--data.data_dir", str(data), cwd=trained)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize("args", [
    ["predict", "--model", "mlp", "--data.predict_images", "nope/"],
    ["fit", "--model", "mlp", "--model.init_args.lr", "-1"],
    ["fit", "--model", "mlp", "--trainer.devices", "64", "--trainer.accelerator", "cpu"],
    ["fit", "--model", "mlp", "--data.data_dir", "missing/"],
])
def test_a_command_that_fails_leaves_no_run_folder(tmp_path, data, args, digitlab_main):
    result = digitlab_main(*args, *SMALL_RUN, cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    assert not (tmp_path / "lightning_logs").exists() or not any((tmp_path / "lightning_logs").iterdir())


def test_tensorboard_and_csv_loggers_share_one_run_folder(tmp_path, data, digitlab_main):
    config = tmp_path / "loggers.yaml"
    config.write_text(yaml.safe_dump({"trainer": {"logger": [
        {"class_path": "lightning.pytorch.loggers.TensorBoardLogger", "init_args": {"save_dir": "."}},
        {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "."}}]}}))
    for _ in range(2):
        result = digitlab_main("fit", "--config", str(config), "--model", "mlp", "--trainer.max_epochs", "1",
                               "--data.data_dir", str(data), *SMALL_RUN, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
    runs = sorted((tmp_path / "lightning_logs").iterdir())
    assert [run.name for run in runs] == ["version_0", "version_1"]
    for run in runs:
        assert (run / "metrics.csv").is_file() and list(run.glob("events.out.tfevents.*"))
        assert (run / "checkpoints" / "last.ckpt").is_file()
