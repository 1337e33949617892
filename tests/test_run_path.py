"""The one run path in Python, as docs/training-and-runs.md shows it: `parse_run`, `build_run`, `Run.execute`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from lightning.pytorch import Callback

from conftest import SMALL_RUN, write_mnist_like
from digitlab.errors import UserError
from digitlab.training.run import build_run, parse_run
from tensorboard_events import hparams, scalars


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_mnist_like(tmp_path_factory.mktemp("data"), train=120, test=40)


def args(data: Path, root: Path, *more: str) -> list[str]:
    return ["--model", "mlp", "--data.data_dir", str(data), *SMALL_RUN, "--seed_everything", "0",
            "--trainer.default_root_dir", str(root), "--trainer.max_epochs", "1", "--pictures", "false", *more]


def test_parse_build_execute_is_a_fit(data, tmp_path, capsys):
    run = build_run(parse_run("fit", args(data, tmp_path)))
    assert run.folder == tmp_path / "lightning_logs" / "version_0"  # claimed when built
    assert type(run.model).__name__ == "ScratchMLP" and run.trainer.max_epochs == 1
    run.execute()
    assert (run.folder / "checkpoints" / "last.ckpt").is_file()
    assert yaml.safe_load((run.folder / "config.yaml").read_text())["model"]["class_path"] == "digitlab.models.mlp.ScratchMLP"
    assert "Test accuracy:" in capsys.readouterr().out


def test_a_caller_adds_callbacks_hyperparameters_and_its_own_folder(data, tmp_path):
    seen = []

    class Witness(Callback):
        def on_fit_end(self, trainer, pl_module) -> None:
            seen.append(trainer.current_epoch)

    folder = tmp_path / "mine" / "trial_7"
    folder.mkdir(parents=True)
    run = build_run(parse_run("fit", args(data, tmp_path, "--test_after_fit", "false")), callbacks=[Witness()],
                    folder=folder, extra_hparams={"sweep": "s", "sweep_trial": 7}, extra_metrics=("sweep/pruned",))
    run.execute()
    assert seen == [1]
    hparams = yaml.safe_load((folder / "hparams.yaml").read_text())
    assert hparams["model"] == "mlp" and hparams["sweep"] == "s" and hparams["sweep_trial"] == 7
    assert "Witness" not in (folder / "config.yaml").read_text()  # the caller's callbacks stay out of the config
    assert -1 not in scalars(folder).get("hp_metric", [])
    assert not (tmp_path / "lightning_logs").exists()  # no other folder was claimed


def test_an_evaluation_is_logged_inside_the_run_it_evaluates(data, tmp_path):
    fit = build_run(parse_run("fit", args(data, tmp_path, "--test_after_fit", "false")))
    fit.execute()
    checkpoint = fit.folder / "checkpoints" / "last.ckpt"
    test = build_run(parse_run("test", ["--ckpt_path", str(checkpoint), *args(data, tmp_path)]))
    assert test.folder == fit.folder / "test_0" and test.method_kwargs["ckpt_path"] == str(checkpoint)
    test.execute()
    assert scalars(test.folder)["test/acc"]


def test_a_run_refused_while_it_is_built_leaves_no_folder(data, tmp_path):
    parsed = parse_run("fit", args(data, tmp_path, "--trainer.devices", "64", "--trainer.accelerator", "cpu"))
    with pytest.raises(UserError, match="would start 64 processes"):
        build_run(parsed)
    assert not (tmp_path / "lightning_logs").exists()


def test_fast_dev_run_claims_no_folder(data, tmp_path):
    run = build_run(parse_run("fit", args(data, tmp_path, "--trainer.fast_dev_run", "true")))
    assert run.folder is None
    run.execute()
    assert list(tmp_path.iterdir()) == []


def test_a_run_ends_with_its_accuracy_loss_classes_and_where_it_is(tmp_path, synthetic_mnist, digitlab_main):
    at = SMALL_RUN.index("--trainer.enable_progress_bar")
    with_progress = SMALL_RUN[:at] + SMALL_RUN[at + 2:]
    result = digitlab_main("fit", "--model", "mlp", "--trainer.max_epochs", "2", "--data.data_dir",
                           str(synthetic_mnist), *with_progress, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    # Not a terminal: one line per epoch, with that epoch's training totals and validation, no bar.
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert len(epochs) == 2 and "\r" not in result.stdout, result.stdout
    assert all(re.fullmatch(rf"epoch {n} · train/loss_epoch \d\.\d{{4}} · train/acc \d\.\d{{4}} · val/loss .* · "
                            r"\d+\.\d s", line) for n, line in enumerate(epochs)), epochs
    accuracy = next(index for index, line in enumerate(lines) if line.startswith("Test accuracy: "))
    assert re.fullmatch(r"Test accuracy: [01]\.\d{4} on 50 images", lines[accuracy])
    assert re.fullmatch(r"  loss \d+\.\d{4} · per class( \d: \d\.\d{3} ?)+", lines[accuracy + 1]), lines[accuracy + 1]
    assert lines[accuracy + 2] == "Run folder: lightning_logs/version_0  (see it: tensorboard --logdir lightning_logs)"
    shown = hparams(tmp_path / "lightning_logs" / "version_0")  # the MLP's own: hidden_size, lr, momentum ...
    assert shown["model"] == "mlp" and {"hidden_size", "lr", "batch_size", "epochs", "seed"} <= shown.keys(), shown
    assert len(shown) <= 12 and not {"data_dir", "download", "compile", "num_classes"} & shown.keys(), shown
    noise = ("hp_metric", "Seed set to", "GPU available: False", "TPU available: False", "v_num")
    assert not [line for line in (result.stdout + result.stderr).splitlines() if any(n in line for n in noise)]
    result = digitlab_main("test", "--ckpt_path", "last", "--data.data_dir", str(synthetic_mnist), *SMALL_RUN,
                           "--trainer.limit_test_batches", "2", "--data.eval_batch_size", "10", cwd=tmp_path)
    assert re.search(r"Test accuracy: [01]\.\d{4} on 20 images \(a smoke run, limit_test_batches=2", result.stdout), result.stdout
    assert "Run folder: lightning_logs/version_0/test_0  (see it: tensorboard --logdir lightning_logs)" in result.stdout
