"""Every user mistake of the reliability issue, through the `digitlab` entry point: exit code 2, one
message that names the offending thing, no traceback, and nothing written.

Most cases call `digitlab.cli.main` in-process (the function behind the console script; see the
`digitlab_main` fixture) to keep the suite fast; the first ones and the genuine-bug case run the installed
console script in a new process, as a user does."""

import sys
from pathlib import Path

import pytest
import torch

import conftest
from conftest import assert_user_error, run_digitlab, synthetic_digits, write_idx, write_mnist_like

QUIET = ("--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false")
SMALL = ("--data.val_split", "40", "--trainer.max_epochs", "1")  # the synthetic sets hold 200 training images


def fit(tmp_path: Path, data: Path, *args: str):
    return run_digitlab("fit", "--model", "lenet5", "--data.data_dir", str(data), "--data.download", "false",
                        *QUIET, *SMALL, *args, cwd=tmp_path)


def assert_nothing_written(tmp_path: Path) -> None:
    assert not list(tmp_path.glob("lightning_logs/version_*")), "a run folder was written"


@pytest.fixture
def data(tmp_path):
    return write_mnist_like(tmp_path / "mnist")


@pytest.fixture(autouse=True)
def in_process(request, digitlab_main, monkeypatch):
    if "console_script" not in request.keywords:
        monkeypatch.setattr(sys.modules[__name__], "run_digitlab", digitlab_main)


@pytest.mark.console_script
def test_missing_data_dir(tmp_path):
    assert_user_error(fit(tmp_path, tmp_path / "nowhere"), "train-images-idx3-ubyte", str(tmp_path / "nowhere"))
    assert_nothing_written(tmp_path)


def test_empty_data_dir(tmp_path):
    (tmp_path / "empty").mkdir()
    assert_user_error(fit(tmp_path, tmp_path / "empty"), "MNIST files not found", str(tmp_path / "empty"))


def test_a_file_as_data_dir(tmp_path):
    (tmp_path / "mnist.tar").write_bytes(b"not a folder")
    assert_user_error(fit(tmp_path, tmp_path / "mnist.tar"), "is a file, not a folder")


def test_truncated_gzip(tmp_path, data):
    damaged = data / "t10k-images-idx3-ubyte.gz"
    damaged.write_bytes(damaged.read_bytes()[:-30])
    assert_user_error(fit(tmp_path, data, "--data.verify", "false"), str(damaged), "gzip")
    assert_nothing_written(tmp_path)


def test_wrong_magic_number(tmp_path, data):
    wrong = data / "train-images-idx3-ubyte.gz"
    write_idx(wrong, synthetic_digits(200)[1])  # a labels file under the images' name
    assert_user_error(fit(tmp_path, data, "--data.verify", "false"), str(wrong), "magic number")


def test_wrong_count_against_the_official_files(tmp_path, data):
    assert_user_error(fit(tmp_path, data), "train-images-idx3-ubyte", "(60000, 28, 28)", "data.verify")


def test_images_and_labels_disagree(tmp_path, data):
    write_idx(data / "train-labels-idx1-ubyte.gz", synthetic_digits(150)[1])
    assert_user_error(fit(tmp_path, data, "--data.verify", "false"), "200 images", "150 labels")


def test_content_differs_from_the_official_files(tmp_path):
    folder = tmp_path / "fake-mnist"
    folder.mkdir()
    for prefix, count in (("train", 60000), ("t10k", 10000)):  # the official shapes, other content
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", torch.zeros(count, 28, 28, dtype=torch.uint8))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", torch.zeros(count, dtype=torch.uint8))
    assert_user_error(fit(tmp_path, folder), "differs from the official", "MD5")


@pytest.mark.console_script
def test_unknown_model_names_the_closest(tmp_path):
    assert_user_error(run_digitlab("fit", "--model", "lenett5", cwd=tmp_path), "lenett5", "'lenet5'")


@pytest.mark.parametrize("where", ["command line", "config file"])
def test_unknown_config_key_names_the_closest(tmp_path, where):
    if where == "command line":
        result = run_digitlab("fit", "--model", "lenet5", "--trainer.max_epohcs", "3", cwd=tmp_path)
    else:
        (tmp_path / "typo.yaml").write_text("model: lenet5\ndata:\n  batch_sise: 64\n")
        result = run_digitlab("fit", "--config", str(tmp_path / "typo.yaml"), cwd=tmp_path)
    assert_user_error(result, "Did you mean", "max_epochs" if where == "command line" else "data.batch_size")


@pytest.mark.parametrize(
    "args, named",
    [
        (("--data.batch_size", "abc"), "data.batch_size"),
        (("--data.batch_size", "0"), "batch_size=0"),
        (("--data.batch_size", "-5"), "batch_size=-5"),
        (("--data.val_split", "-1"), "val_split=-1"),
        (("--data.val_split", "200", "--data.verify", "false"), "leaves no training images"),
        (("--model.init_args.optimizer", "torch.optim.SGD", "--model.init_args.optimizer.init_args.lr", "0"),
         "learning rate 0"),
        (("--model.init_args.optimizer.init_args.lr", "-0.1"), "Invalid learning rate"),
    ],
)
def test_wrong_types_and_out_of_range_values(tmp_path, data, args, named):
    assert_user_error(fit(tmp_path, data, *args), named)
    assert_nothing_written(tmp_path)


def test_non_positive_mlp_learning_rate(tmp_path, data):
    result = run_digitlab("fit", "--model", "mlp", "--model.lr", "0", "--data.data_dir", str(data), cwd=tmp_path)
    assert_user_error(result, "model.lr=0")


def test_config_file_that_does_not_exist(tmp_path):
    assert_user_error(run_digitlab("fit", "--config", "nope.yaml", cwd=tmp_path), "nope.yaml", "does not exist")


def test_config_file_that_is_not_yaml(tmp_path):
    (tmp_path / "broken.yaml").write_text("model: [lenet5\ntrainer: {max_epochs: 3\n")
    result = run_digitlab("fit", "--config", str(tmp_path / "broken.yaml"), cwd=tmp_path)
    assert_user_error(result, "broken.yaml", "not valid YAML", "line")


def test_checkpoint_that_does_not_exist(tmp_path, data):
    result = run_digitlab("test", "--model", "lenet5", "--data.data_dir", str(data), "--ckpt_path", "gone.ckpt",
                          cwd=tmp_path)
    assert_user_error(result, "gone.ckpt", "no such file")


def test_checkpoint_of_another_model(tmp_path, data):
    trained = run_digitlab("fit", "--model", "centroid", "--data.data_dir", str(data), "--data.verify", "false",
                           "--data.val_split", "0", "--trainer.max_epochs", "1", *QUIET, cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    [checkpoint] = tmp_path.glob("lightning_logs/version_0/checkpoints/*.ckpt")
    result = run_digitlab("test", "--model", "lenet5", "--data.data_dir", str(data), "--data.verify", "false",
                          "--ckpt_path", str(checkpoint), cwd=tmp_path)
    assert_user_error(result, str(checkpoint), "NearestCentroid", "LeNet5")


def test_a_file_that_is_not_a_checkpoint(tmp_path, data):
    (tmp_path / "notes.ckpt").write_text("hello")
    result = run_digitlab("test", "--model", "lenet5", "--data.data_dir", str(data), "--ckpt_path", "notes.ckpt",
                          cwd=tmp_path)
    assert_user_error(result, "notes.ckpt", "not a readable checkpoint")


def test_more_devices_than_exist(tmp_path, data):
    result = fit(tmp_path, data, "--trainer.accelerator", "gpu", "--trainer.devices", "64")
    assert_user_error(result, "trainer.accelerator", "trainer.devices")
    assert_nothing_written(tmp_path)


def test_an_existing_run_folder_is_never_reused(tmp_path, data):
    earlier = tmp_path / "lightning_logs" / "version_3"
    earlier.mkdir(parents=True)
    (earlier / "config.yaml").write_text("the earlier run's config\n")
    result = fit(tmp_path, data, "--data.verify", "false", "--trainer.logger.class_path", "TensorBoardLogger",
                 "--trainer.logger.init_args.save_dir", ".", "--trainer.logger.init_args.version", "3")
    assert_user_error(result, str(Path("lightning_logs") / "version_3"), "never writes into an earlier run")
    assert (earlier / "config.yaml").read_text() == "the earlier run's config\n"


def test_without_a_logger_a_run_starts_in_a_used_folder_but_never_overwrites_checkpoints(tmp_path, data):
    (tmp_path / "notes.txt").write_text("the user's own files\n")  # the folder the command runs in
    no_logger = ("--data.verify", "false", "--trainer.logger", "false")
    first = fit(tmp_path, data, *no_logger)
    assert first.returncode == 0, first.stderr
    saved = {path: path.read_bytes() for path in (tmp_path / "checkpoints").iterdir()}
    assert saved
    again = fit(tmp_path, data, *no_logger)
    assert_user_error(again, str(tmp_path / "checkpoints"), "--trainer.default_root_dir")
    assert {path: path.read_bytes() for path in (tmp_path / "checkpoints").iterdir()} == saved
    elsewhere = fit(tmp_path, data, *no_logger, "--trainer.default_root_dir", "second")
    assert elsewhere.returncode == 0, elsewhere.stderr
    assert list((tmp_path / "second" / "checkpoints").iterdir())


@pytest.mark.console_script
def test_a_genuine_bug_still_shows_its_traceback(tmp_path, data):
    (tmp_path / "buggy_model.py").write_text(
        "import torch\n"
        "from digitlab.models import DigitModel\n\n"
        "class Buggy(DigitModel):\n"
        "    def __init__(self, **kwargs):\n"
        "        super().__init__(**kwargs)\n"
        "        self.weight = torch.nn.Parameter(torch.zeros(1))\n\n"
        "    def forward(self, x):\n"
        "        return 1 / 0\n"
    )
    result = run_digitlab("fit", "--model", "buggy_model.Buggy", "--data.data_dir", str(data), "--data.verify",
                          "false", *QUIET, *SMALL, cwd=tmp_path, env={"PYTHONPATH": str(tmp_path)})
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "ZeroDivisionError" in result.stderr


@pytest.mark.parametrize(
    "args, named",
    [
        (("--config", str(conftest.REPO / "configs/lenet5.yaml"), "--data.val_split", "0"),
         "EarlyStopping monitors val/loss, but data.val_split is 0"),
        (("--trainer.callbacks+=digitlab.training.callbacks.ModelCheckpoint",
          "--trainer.callbacks+=digitlab.training.callbacks.ModelCheckpoint"), "more than one stateful callback"),
        (("--seed_everything", "-1"), "seed_everything=-1 is not valid"),
        (("--seed_everything", str(10**23)), "is not valid: expected an integer from 0 to 4,294,967,295"),
        (("--data.seed", "-1"), "data.seed=-1"),
        (("--trainer.accumulate_grad_batches", "0"), "accumulate_grad_batches"),
        (("--trainer.val_check_interval", "1000"), "`val_check_interval` (1000) must be less than"),
        (("--trainer.strategy", "nonsense"), "invalid strategy name"),
        (("--trainer.accelerator", "tpu"), "torch_xla"),
        (("--trainer.max_epochs", "-5"), "`max_epochs` must be a non-negative integer"),
        (("--ckpt_path", "best"), "--ckpt_path best"),
        (("--ckpt_path", "hpc"), "--ckpt_path hpc"),
        (("--trainer.devices", "64", "--trainer.accelerator", "cpu"), "would start 64 processes"),
    ],
)
def test_settings_lightning_refuses_are_one_paragraph_before_any_run_folder(tmp_path, data, args, named):
    assert_user_error(fit(tmp_path, data, "--data.verify", "false", *args), named)
    assert_nothing_written(tmp_path)
    assert not (tmp_path / "lightning_logs").exists() or not any((tmp_path / "lightning_logs").iterdir())


def test_a_file_as_default_root_dir(tmp_path, data):
    (tmp_path / "afile").write_text("x")
    assert_user_error(fit(tmp_path, data, "--trainer.default_root_dir", "afile"), "default_root_dir=afile is a file")


def test_an_empty_config_is_named(tmp_path, data):
    (tmp_path / "empty.yaml").write_text("# nothing yet\n")
    assert_user_error(fit(tmp_path, data, "--config", "empty.yaml"), "empty.yaml is empty")


@pytest.mark.console_script  # pytest captures warnings in its own process
@pytest.mark.parametrize("args, said", [
    (("fit", "--trainer.max_epochs", "0"), "no training step will run"),
    (("fit", "--trainer.limit_train_batches", "0"), "no training step will run"),
    (("test",), "`test` without --ckpt_path uses the model's initial, untrained weights"),
])
def test_measuring_untrained_weights_is_said(tmp_path, data, args, said):
    result = run_digitlab(*args, "--model", "lenet5", "--data.data_dir", str(data), *QUIET, "--data.val_split", "40",
                          "--data.verify", "false", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"digitlab: warning: {said}" in result.stderr


def test_a_typo_in_a_config_file_names_the_file(tmp_path):
    (tmp_path / "overlay.yaml").write_text("trainer:\n  max_epoch: 1\n")
    result = run_digitlab("fit", "--model", "lenet5", "--config", str(tmp_path / "overlay.yaml"), cwd=tmp_path)
    assert_user_error(result, "'max_epoch'", f"in the config file {tmp_path / 'overlay.yaml'}",
                      "Did you mean 'trainer.max_epochs'")


def test_a_typo_in_a_models_arguments_names_the_file(tmp_path):
    (tmp_path / "model.yaml").write_text("model:\n  class_path: lenet5\n  init_args:\n    chanels: 3\n")
    result = run_digitlab("fit", "--config", str(tmp_path / "model.yaml"), cwd=tmp_path)
    assert_user_error(result, "'chanels'", f"in the config file {tmp_path / 'model.yaml'}")


def test_a_model_whose_plugin_is_not_installed_says_which_package_to_install(tmp_path):
    # A run's config.yaml written while a plugin was installed, read after it was uninstalled.
    config = tmp_path / "config.yaml"
    config.write_text("model:\n  class_path: digitlab_goneplugin.model.GoneNet\n  init_args:\n    channels: 8\n")
    result = run_digitlab("test", "--config", str(config), cwd=tmp_path)
    assert_user_error(result, "digitlab_goneplugin.model.GoneNet", f"named in the config file {config}",
                      "package digitlab_goneplugin, which is not installed", "`pip install digitlab_goneplugin`")
    assert "--help" not in result.stderr


@pytest.mark.parametrize("subcommand", ["test", "export"])
def test_a_run_whose_plugin_was_uninstalled_says_which_package_to_install(tmp_path, subcommand):
    from checkpoint_files import write_checkpoint

    run = tmp_path / "lightning_logs" / "version_0"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("model:\n  class_path: digitlab_goneplugin.model.GoneNet\n")
    checkpoint = write_checkpoint(run / "checkpoints" / "last.ckpt", "digitlab_goneplugin.model.GoneNet", {})
    result = run_digitlab(subcommand, "--ckpt_path", str(checkpoint), cwd=tmp_path)
    assert_user_error(result, "digitlab_goneplugin.model.GoneNet", "package digitlab_goneplugin, which is not "
                      "installed", "`pip install digitlab_goneplugin`")
    assert "import as code" not in result.stderr and "not a registered" not in result.stderr
