"""Strings that name callables: a name the parser could import, anywhere in a checkpoint's hyperparameters or in
a run's config.yaml that digitlab picked up itself, is refused as one paragraph before the parser sees it,
unless it names the configured model, a registered model or a torch.optim optimizer or scheduler.

Every name below points into a probe module whose import, or a call of its function, writes a marker file:
no marker means nothing was imported or called."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from conftest import SMALL_RUN, assert_user_error, write_mnist_like
from digitlab.config.import_names import could_import
from digitlab.errors import UserError

PROBE = "digitlab_string_probe"
LENET = "digitlab.models.lenet.LeNet5"
LAMBDA_LR = "torch.optim.lr_scheduler.LambdaLR"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_mnist_like(tmp_path_factory.mktemp("data"), train=100, test=20)


@pytest.fixture(scope="module")
def lenet_weights():
    from digitlab.models.lenet import LeNet5

    return LeNet5().state_dict()


@pytest.fixture
def probe(tmp_path, monkeypatch) -> Path:
    """The marker file that importing the probe module, or calling or building what it holds, would write."""
    folder = tmp_path / "probe"
    folder.mkdir()
    marker = folder / "imported.marker"
    (folder / f"{PROBE}.py").write_text(textwrap.dedent(f"""
        from pathlib import Path
        MARKER = Path({str(marker)!r})
        MARKER.write_text("imported")

        def call(*args, **kwargs):
            MARKER.write_text("called")

        class Net:
            def __init__(self, *args, **kwargs):
                MARKER.write_text("built")
    """))
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, PROBE, raising=False)
    return marker


def lightning_checkpoint(path: Path, state_dict: dict, **hyperparameters) -> Path:
    """A checkpoint that the Trainer could restore (fit resumes it too), with these model hyperparameters."""
    torch.save({"state_dict": state_dict, "pytorch-lightning_version": "2.6.0", "epoch": 0, "global_step": 0,
                "optimizer_states": [], "lr_schedulers": [],
                "hyper_parameters": {"_class_path": LENET, **hyperparameters}}, path)
    return path


def assert_refused(result, probe: Path, *fragments: str) -> None:
    """Exit 2, one paragraph naming the refused name, and the probe never imported."""
    assert_user_error(result, *fragments, "import as code")
    message = [line for line in result.stderr.strip().splitlines() if "import as code" in line]
    assert len(message) == 1, result.stderr
    assert not probe.exists(), probe.read_text()
    assert PROBE not in sys.modules


IN_HYPERPARAMETERS = {
    "optimizer as a dotted name": dict(optimizer=f"{PROBE}.call"),
    "lr_scheduler as a class name": dict(lr_scheduler=f"{PROBE}.Net"),
    "LambdaLR's lr_lambda": dict(lr_scheduler={"class_path": LAMBDA_LR, "init_args": {"lr_lambda": f"{PROBE}.call"}}),
    "lr_lambda in a list": dict(lr_scheduler={"class_path": LAMBDA_LR,
                                              "init_args": {"lr_lambda": ["os._exit", f"{PROBE}.call"]}}),
    "a class_path of the probe": dict(optimizer={"class_path": f"{PROBE}.Net", "init_args": {}}),
    "a dotted value deep inside": dict(optimizer={"class_path": "torch.optim.SGD",
                                                  "init_args": {"lr": 0.1, "foreach": [{"x": f"{PROBE}.call"}]}}),
    "a dotted mapping key": dict(standardize={f"{PROBE}.call": 1}),
    "a module of torch.optim, not a class": dict(optimizer="torch.optim.adam.os"),
    "a bare word for a callable": dict(optimizer="exec"),
}


@pytest.mark.parametrize("hyperparameters", IN_HYPERPARAMETERS.values(), ids=IN_HYPERPARAMETERS.keys())
def test_a_name_in_a_checkpoints_hyperparameters_is_refused_by_test(hyperparameters, probe, data, lenet_weights,
                                                                      tmp_path, digitlab_main):
    checkpoint = lightning_checkpoint(tmp_path / "named.ckpt", lenet_weights, **hyperparameters)
    result = digitlab_main("test", "--model", "lenet5", "--ckpt_path", str(checkpoint), "--data.data_dir",
                           str(data), *SMALL_RUN, cwd=tmp_path)
    assert_refused(result, probe, str(checkpoint), "--weights_only false")
    assert not (tmp_path / "lightning_logs").exists()


@pytest.mark.parametrize("subcommand", ["fit", "validate", "predict"])
@pytest.mark.parametrize("hyperparameters", [dict(lr_scheduler=f"{PROBE}.call"),
                                             dict(lr_scheduler={"class_path": LAMBDA_LR,
                                                                "init_args": {"lr_lambda": "subprocess.getoutput"}})])
def test_every_run_subcommand_refuses_a_name_in_a_checkpoint(subcommand, hyperparameters, probe, data,
                                                               lenet_weights, tmp_path, digitlab_main):
    checkpoint = lightning_checkpoint(tmp_path / "named.ckpt", lenet_weights, **hyperparameters)
    result = digitlab_main(subcommand, "--model", "lenet5", "--ckpt_path", str(checkpoint), "--data.data_dir",
                           str(data), *SMALL_RUN, cwd=tmp_path)
    assert_refused(result, probe, str(checkpoint))


MODEL_ARGUMENTS = {
    "a dotted value": dict(standardize=f"{PROBE}.call"),
    "a class_path": dict(standardize={"class_path": f"{PROBE}.Net"}),
    "a dotted key": dict(num_classes={f"{PROBE}.call": 10}),
    "in a list": dict(standardize=[True, "subprocess.getoutput"]),
}


@pytest.mark.parametrize("arguments", MODEL_ARGUMENTS.values(), ids=MODEL_ARGUMENTS.keys())
def test_export_refuses_a_name_among_the_model_arguments(arguments, probe, lenet_weights, tmp_path, digitlab_main):
    checkpoint = lightning_checkpoint(tmp_path / "named.ckpt", lenet_weights, **arguments)
    result = digitlab_main("export", "--ckpt_path", str(checkpoint), "--output", str(tmp_path / "m.onnx"),
                           cwd=tmp_path)
    assert_refused(result, probe, str(checkpoint))
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("arguments", MODEL_ARGUMENTS.values(), ids=MODEL_ARGUMENTS.keys())
def test_serve_loading_refuses_a_name_among_the_model_arguments(arguments, probe, lenet_weights, tmp_path):
    from digitlab.deploy.loading import load_model

    checkpoint = lightning_checkpoint(tmp_path / "named.ckpt", lenet_weights, **arguments)
    with pytest.raises(UserError, match="import as code"):
        load_model(str(checkpoint))
    assert not probe.exists()


def run_folder(root: Path, weights: dict, config: dict) -> Path:
    """``root/lightning_logs/version_0`` with a clean checkpoint and `config` as its config.yaml."""
    run = root / "lightning_logs" / "version_0"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    return lightning_checkpoint(run / "checkpoints" / "last.ckpt", weights)


def run_config(data: Path, **changes) -> dict:
    config = {"model": {"class_path": LENET, "init_args": {
                  "optimizer": {"class_path": "torch.optim.Adam", "init_args": {"lr": 0.01}},
                  "lr_scheduler": {"class_path": "torch.optim.lr_scheduler.StepLR", "init_args": {"step_size": 1}}}},
              "trainer": {"callbacks": [{"class_path": "digitlab.training.callbacks.ModelCheckpoint",
                                         "init_args": {"monitor": "val/acc", "mode": "max", "save_last": True}}],
                          "max_epochs": 1},
              "data": {"data_dir": str(data), "verify": False, "download": False, "val_split": 20}}
    for where, value in changes.items():
        section, key = where.split("__")
        config[section][key] = value
    return config


IN_RUN_CONFIG = {
    "the model's optimizer": dict(model__init_args={"optimizer": f"{PROBE}.call"}),
    "the model's class": dict(model__class_path=f"{PROBE}.Net"),
    "a callback": dict(trainer__callbacks=[{"class_path": f"{PROBE}.Net"}]),
    "a logger": dict(trainer__logger={"class_path": f"{PROBE}.Net", "init_args": {"save_dir": "."}}),
    "a plugin as a string": dict(trainer__plugins=f"{PROBE}.Net"),
    "a dotted key of the data": dict(data__data_dir={f"{PROBE}.call": "x"}),
}


@pytest.mark.parametrize("changes", IN_RUN_CONFIG.values(), ids=IN_RUN_CONFIG.keys())
def test_a_name_in_a_run_config_picked_up_by_digitlab_is_refused(changes, probe, data, lenet_weights, tmp_path,
                                                                   digitlab_main):
    checkpoint = run_folder(tmp_path, lenet_weights, run_config(data, **changes))
    result = digitlab_main("test", "--ckpt_path", str(checkpoint), *SMALL_RUN, cwd=tmp_path)
    assert_refused(result, probe, "config.yaml", "--config")
    assert sorted(p.name for p in checkpoint.parents[1].iterdir()) == ["checkpoints", "config.yaml"]


def test_a_run_config_as_fit_writes_it_is_used(data, lenet_weights, tmp_path, digitlab_main):
    checkpoint = run_folder(tmp_path, lenet_weights, run_config(data))
    result = digitlab_main("test", "--ckpt_path", str(checkpoint), *SMALL_RUN, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Test accuracy:" in result.stdout


def test_torch_optim_classes_in_a_checkpoint_are_accepted(data, lenet_weights, tmp_path, digitlab_main):
    checkpoint = lightning_checkpoint(
        tmp_path / "clean.ckpt", lenet_weights,
        optimizer={"class_path": "torch.optim.SGD", "init_args": {"lr": 0.1}},
        lr_scheduler={"class_path": "torch.optim.lr_scheduler.StepLR", "init_args": {"step_size": 1}})
    result = digitlab_main("test", "--model", "lenet5", "--ckpt_path", str(checkpoint), "--data.data_dir", str(data),
                           *SMALL_RUN, "--trainer.logger", "false", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]


def test_weights_only_false_trusts_the_checkpoints_names(probe, data, lenet_weights, tmp_path, digitlab_main):
    checkpoint = lightning_checkpoint(tmp_path / "trusted.ckpt", lenet_weights, optimizer=f"{PROBE}.Net")
    digitlab_main("test", "--model", "lenet5", "--ckpt_path", str(checkpoint), "--weights_only", "false",
                  "--data.data_dir", str(data), *SMALL_RUN, "--trainer.logger", "false", cwd=tmp_path)
    assert probe.exists()  # the user's explicit trust: the parser resolved the name


@pytest.mark.parametrize("text, expected", [
    ("os.system", True), ("this.s", True), ("subprocess.getoutput", True), ("torch.optim.Adam", True),
    (" os.system ", True), ("1e-3", False), ("0.5", False), ("mean", False), ("best-{epoch:02d}", False),
    ("no_such_module_here.csv", False), ("os.", False), ("../data.d/x", False), ("os..path", False),
])
def test_what_could_be_an_import(text, expected):
    assert could_import(text) is expected
