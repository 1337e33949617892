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


def _argparse_choices():
    import importlib

    from digitlab.cli import SUBCOMMANDS

    for name, command in SUBCOMMANDS.items():
        if command.parser is None:
            continue
        module, _, function = command.parser.partition(":")
        parser = getattr(importlib.import_module(module), function)()
        for action in parser._actions:
            if action.choices and action.option_strings:
                yield name, parser, action


def test_every_invalid_choice_is_one_paragraph_naming_the_choices():
    from digitlab.errors import UserError

    found = list(_argparse_choices())
    assert {(name, action.dest) for name, _, action in found} >= {("export", "format"), ("serve", "log_level")}
    for name, parser, action in found:
        option = next(o for o in action.option_strings if o.startswith("--"))
        with pytest.raises(UserError) as refused:
            parser.parse_args([option, "tflite"])
        message = str(refused.value)
        assert "\n" not in message and "usage:" not in message
        assert message.startswith(f"{option} tflite is not valid: choose one of ")
        assert all(str(choice) in message for choice in action.choices) and f"digitlab {name} --help" in message


def test_an_invalid_format_is_one_line_through_the_command(tmp_path):
    result = run_digitlab("export", "--ckpt_path", "last", "--format", "onx", cwd=tmp_path)
    assert_user_error(result, "--format onx is not valid: choose one of onnx, torchscript.", "Did you mean 'onnx'")
    assert len(result.stderr.strip().splitlines()) == 1


# -- a torchvision built for another torch ------------------------------------------------------------------


def fake_versions(monkeypatch, torch: str, torchvision: str) -> None:
    from digitlab.utils import installed_torch

    versions = {"torch": torch, "torchvision": torchvision}
    monkeypatch.setattr(installed_torch, "installed_version", versions.get)


@pytest.mark.parametrize("torch, torchvision, why, fix", [
    ("2.13.0+cpu", "0.28.0+cu128", "built for CUDA 12", "torch==2.13.0 torchvision --index-url "
                                                        "https://download.pytorch.org/whl/cpu"),
    ("2.14.1+cu130", "0.28.0+cu130", "built for torch 2.13", "torch==2.14.1 torchvision --index-url "
                                                             "https://download.pytorch.org/whl/cu130"),
    ("2.5.1", "0.21.0", "built for torch 2.6", "torch==2.5.1 torchvision`"),
])
def test_a_torchvision_built_for_another_torch_is_one_line_before_anything_is_imported(
        tmp_path, monkeypatch, torch, torchvision, why, fix):
    fake_versions(monkeypatch, torch, torchvision)
    result = run_digitlab("fit", "--config", "configs/lenet5.yaml", cwd=tmp_path)
    assert_user_error(result, f"torchvision {torchvision} does not go with torch {torch} (it was {why})",
                      f"`pip install --force-reinstall {fix}")
    assert len(result.stderr.strip().splitlines()) == 1
    fake_versions(monkeypatch, torch, torchvision)
    assert "torchvision" not in run_digitlab("report", cwd=tmp_path).stderr  # the report needs no torch


@pytest.mark.parametrize("torch, torchvision", [
    ("2.14.1+cu130", "0.29.1+cu130"), ("2.13.0+cpu", "0.28.0+cpu"), ("2.5.1", "0.20.1"), ("2.5.1+cu124", "0.20.1"),
    ("2.7.0a0+git1234", "0.22.0a0"), ("3.0.0", "1.0.0"),
])
def test_builds_that_go_together_pass(monkeypatch, torch, torchvision):
    from digitlab.utils import installed_torch

    fake_versions(monkeypatch, torch, torchvision)
    installed_torch.check()


def test_the_installed_torch_and_torchvision_pass_and_are_read_without_importing():
    from digitlab.utils import installed_torch

    import torch
    import torchvision

    assert installed_torch.installed_version("torch") == torch.__version__
    assert installed_torch.installed_version("torchvision") == torchvision.__version__
    installed_torch.check()


def raise_torchvision_import_failure(args):
    raise RuntimeError("operator torchvision::nms does not exist")


def test_torchvisions_import_failure_is_explained_in_one_line(tmp_path, monkeypatch):
    from digitlab import cli

    monkeypatch.setitem(cli.SUBCOMMANDS, "models", cli.Subcommand("", f"{__name__}:raise_torchvision_import_failure"))
    fake_versions(monkeypatch, "2.13.0+cpu", "0.28.0+cu128")
    monkeypatch.setattr(cli.installed_torch, "check", lambda: None)  # as if the versions had not told
    result = run_digitlab("models", cwd=tmp_path)
    assert_user_error(result, "torchvision 0.28.0+cu128 does not go with torch 2.13.0+cpu", "pip install")
    assert len(result.stderr.strip().splitlines()) == 1
