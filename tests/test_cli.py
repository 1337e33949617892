"""The `digitlab` entry point on tiny synthetic data: `digitlab.cli.main` in-process (the function behind the
console script; see the `digitlab_main` fixture), and the installed script in a new process for the tests
marked `console_script`, as a user runs it."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO, assert_user_error, run_digitlab

SYNTHETIC = ["--data.verify", "false", "--data.val_split", "40", "--data.batch_size", "32"]
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


@pytest.fixture(autouse=True)
def in_process(request, digitlab_main, monkeypatch):
    if "console_script" not in request.keywords:
        monkeypatch.setattr(sys.modules[__name__], "run_digitlab", digitlab_main)


@pytest.mark.console_script
def test_models_lists_lenet5_with_a_description(tmp_path):
    result = run_digitlab("models", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("lenet5"))
    assert "digitlab.models.lenet.LeNet5" in line and "built-in" in line and "LeNet-5" in line


@pytest.mark.parametrize("model", [pytest.param("lenet5", marks=pytest.mark.console_script), "LeNet5",
                                   "digitlab.models.lenet.LeNet5"])
def test_fit_accepts_registry_name_class_name_and_class_path(tmp_path, synthetic_mnist, model):
    result = run_digitlab(
        "fit", "--model", model, "--data.data_dir", str(synthetic_mnist), *SYNTHETIC, *QUIET,
        "--trainer.max_epochs", "1", cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Test accuracy:" in result.stdout
    saved = yaml.safe_load((tmp_path / "lightning_logs" / "version_0" / "config.yaml").read_text())
    assert saved["model"]["class_path"] == "digitlab.models.lenet.LeNet5"
    assert saved["test_after_fit"] is True


def test_test_after_fit_can_be_switched_off(tmp_path, synthetic_mnist):
    result = run_digitlab(
        "fit", "--model", "lenet5", "--data.data_dir", str(synthetic_mnist), *SYNTHETIC, *QUIET,
        "--trainer.max_epochs", "1", "--test_after_fit", "false", cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Test accuracy:" not in result.stdout


def test_print_config_holds_full_class_paths(tmp_path):
    config = tmp_path / "named.yaml"
    config.write_text("model: lenet5\ntrainer:\n  max_epochs: 2\n")
    result = run_digitlab("fit", "--config", str(config), "--print_config", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    printed = yaml.safe_load(result.stdout)
    assert printed["model"]["class_path"] == "digitlab.models.lenet.LeNet5"
    assert printed["trainer"]["max_epochs"] == 2


def test_trainer_overlays_combine_with_a_model_config(tmp_path):
    result = run_digitlab(
        "fit", "--config", str(REPO / "configs/lenet5.yaml"), "--config", str(REPO / "configs/trainer/cpu.yaml"),
        "--print_config", cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    printed = yaml.safe_load(result.stdout)
    assert printed["trainer"]["accelerator"] == "cpu"
    assert printed["data"]["val_split"] == 0.2  # the model config's value survives the overlay


def test_unknown_model_on_the_command_line_names_the_closest(tmp_path):
    assert_user_error(run_digitlab("fit", "--model", "lenet6", cwd=tmp_path), "lenet6", "Did you mean 'lenet5'")


def test_unknown_model_in_yaml_names_the_closest(tmp_path):
    config = tmp_path / "typo.yaml"
    config.write_text("model: lenet6\n")
    assert_user_error(run_digitlab("fit", "--config", str(config), cwd=tmp_path), "Did you mean 'lenet5'")


def test_missing_data_without_download_is_one_clear_message(tmp_path):
    result = run_digitlab(
        "fit", "--model", "lenet5", "--data.data_dir", str(tmp_path / "nowhere"), "--data.download", "false",
        *QUIET, cwd=tmp_path,
    )
    assert_user_error(result, "train-images-idx3-ubyte", str(tmp_path / "nowhere"), "--data.data_dir")


def test_corrupt_data_file_is_named(tmp_path, synthetic_mnist):
    damaged = synthetic_mnist / "train-images-idx3-ubyte.gz"
    damaged.write_bytes(damaged.read_bytes()[:100])
    result = run_digitlab("fit", "--model", "lenet5", "--data.data_dir", str(synthetic_mnist), *SYNTHETIC, *QUIET,
                          cwd=tmp_path)
    assert_user_error(result, str(damaged), "truncated")
    assert not Path(tmp_path / "lightning_logs" / "version_0" / "checkpoints").exists()


@pytest.mark.slow  # a new interpreter, to see what `--help` imports
@pytest.mark.parametrize("args", [["--help"], []])
def test_help_lists_every_subcommand_without_importing_torch(tmp_path, args):
    code = "import sys; from digitlab.cli import main; main(sys.argv[1:]); print(sorted({'torch', 'lightning'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code, *args], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    from digitlab.cli import SUBCOMMANDS

    listed = {line.split()[0] for line in result.stdout.splitlines() if line.startswith("  ")}
    assert listed == set(SUBCOMMANDS) >= {"fit", "validate", "test", "predict", "models", "report"}
    assert result.stdout.rstrip().endswith("[]")  # neither torch nor Lightning was imported


@pytest.mark.console_script
def test_an_unknown_subcommand_names_the_closest(tmp_path):
    assert_user_error(run_digitlab("fitt", cwd=tmp_path), "'fitt' is not a digitlab subcommand", "Did you mean 'fit'")


def test_python_dash_m_digitlab_is_the_digitlab_command(tmp_path, monkeypatch, capsys):
    import runpy

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["digitlab", "models"])
    try:
        runpy.run_module("digitlab", run_name="__main__")  # digitlab/__main__.py, as `python -m digitlab` runs it
    except SystemExit as exit:
        assert exit.code in (0, None)
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("lenet5"))
    assert "digitlab.models.lenet.LeNet5" in line
