"""`--ckpt_path best` (the newest run's best checkpoint by its monitored metric), a run folder or `version_N` as
--ckpt_path, and the one line each evaluation, export and serve prints about the checkpoint it uses."""

from pathlib import Path

import pytest
import torch

from conftest import SMALL_RUN, assert_user_error, digitlab_here, fit_one_mlp_epoch, write_mnist_like
from digitlab.errors import UserError
from digitlab.runs import checkpoints

# As configs/lenet5.yaml checkpoints: the best epoch by val/acc as best-{epoch}.ckpt, and last.ckpt.
MONITORED = ("{class_path: digitlab.training.callbacks.ModelCheckpoint, init_args: {monitor: val/acc, mode: max, "
             "save_last: true, filename: 'best-{epoch:02d}'}}")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_mnist_like(tmp_path_factory.mktemp("data"), train=200, test=50)


@pytest.fixture(scope="module")
def monitored_run(tmp_path_factory, data):
    """A 3-epoch mlp run monitoring val/acc, with lr 2.0 so that val/acc stops improving early: its best
    checkpoint is an earlier epoch's than last.ckpt's. The working folder, and the best file's name."""
    cwd = tmp_path_factory.mktemp("monitored")
    result = digitlab_here("fit", "--model", "mlp", "--model.init_args.lr", "2.0", "--trainer.max_epochs", "3",
                           "--trainer.callbacks+", MONITORED, "--data.data_dir", str(data), *SMALL_RUN,
                           "--test_after_fit", "false", cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    run = cwd / "lightning_logs" / "version_0"
    state = checkpoints.monitored(torch.load(run / "checkpoints" / "last.ckpt", weights_only=True))
    assert state is not None and state["monitor"] == "val/acc"
    best = Path(state["best_model_path"])
    assert best.parts[-3:-1] == ("version_0", "checkpoints") and best.name.startswith("best-epoch=")
    return cwd, best.name


def using_line(name: str) -> str:
    epoch = int(name.split("=")[1].split(".")[0])
    return f"digitlab: using lightning_logs/version_0/checkpoints/{name} (mlp, epoch {epoch}, run version_0)"


def test_test_best_evaluates_the_best_epochs_file(monitored_run):
    cwd, best = monitored_run
    result = digitlab_here("test", "--ckpt_path", "best", "--trainer.enable_progress_bar", "false", cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    assert using_line(best) in result.stderr
    assert "Test accuracy:" in result.stdout
    assert any((cwd / "lightning_logs" / "version_0").glob("test_*"))  # logged beside the run it tested


def test_test_last_names_the_last_checkpoint(monitored_run):
    cwd, _ = monitored_run
    result = digitlab_here("validate", "--ckpt_path", "last", "--trainer.enable_progress_bar", "false", cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "digitlab: using lightning_logs/version_0/checkpoints/last.ckpt (mlp, epoch 2, run version_0)" \
        in result.stderr


@pytest.mark.parametrize("named", ["version_0", "lightning_logs/version_0"])
def test_a_run_folder_means_its_best_checkpoint(monitored_run, named):
    cwd, best = monitored_run
    result = digitlab_here("predict", "--ckpt_path", named, "--trainer.enable_progress_bar", "false", cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    assert using_line(best) in result.stderr


def test_export_best(monitored_run, tmp_path):
    cwd, best = monitored_run
    output = tmp_path / "best.pt"
    result = digitlab_here("export", "--ckpt_path", "best", "--format", "torchscript", "--output", str(output), "--data.verify", "false",
                           cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    assert using_line(best) in result.stderr
    assert output.is_file() and f"from lightning_logs/version_0/checkpoints/{best}" in result.stdout


def test_best_checkpoint_of_a_moved_run_is_found_in_its_folder(monitored_run, tmp_path):
    cwd, best = monitored_run
    moved = tmp_path / "elsewhere" / "version_0"
    import shutil

    shutil.copytree(cwd / "lightning_logs" / "version_0", moved)
    assert checkpoints.best_checkpoint(moved) == moved / "checkpoints" / best


@pytest.fixture(scope="module")
def unmonitored_run(tmp_path_factory, data):
    cwd = tmp_path_factory.mktemp("unmonitored")
    fit_one_mlp_epoch(cwd, data)
    return cwd


def test_best_of_a_run_without_a_monitored_checkpoint_is_one_paragraph(unmonitored_run):
    result = digitlab_here("test", "--ckpt_path", "best", cwd=unmonitored_run)
    assert_user_error(result, "--ckpt_path best", "has no best checkpoint", "--ckpt_path last")
    with pytest.raises(UserError, match="no best checkpoint"):
        checkpoints.best_checkpoint(unmonitored_run / "lightning_logs" / "version_0")


def test_a_run_folder_without_a_best_checkpoint_means_its_last(unmonitored_run):
    assert checkpoints.named("version_0", unmonitored_run / "lightning_logs") == \
        str(unmonitored_run / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt")


def test_best_with_no_runs_is_one_paragraph(tmp_path):
    result = digitlab_here("export", "--ckpt_path", "best", cwd=tmp_path)
    assert_user_error(result, "--ckpt_path best: no run under")
