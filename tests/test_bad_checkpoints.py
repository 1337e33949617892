"""Bad checkpoints, each one paragraph with exit code 2 before anything runs: hyperparameters that are not a
mapping, weights that hold NaN or infinities, hyperparameters that would build a model far larger than the
checkpoint's weights (checked before the model is built), and files that are not checkpoints at all."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import pytest
import torch

from conftest import SMALL_RUN, assert_user_error, run_digitlab, write_mnist_like
from digitlab.errors import UserError

CENTROID = "digitlab.models.centroid.NearestCentroid"
MLP = "digitlab.models.mlp.ScratchMLP"
UNALLOCATABLE = 10**12  # classes whose weights no machine could hold: building them for real fails


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_mnist_like(tmp_path_factory.mktemp("data"), train=200, test=20)


def weights(class_path: str) -> dict[str, torch.Tensor]:
    from digitlab.models.registry import model_entries

    return next(e for e in model_entries() if e.class_path == class_path).cls().state_dict()


def checkpoint_file(path: Path, class_path: str, state_dict: dict, hyper_parameters=None, **more) -> Path:
    """A checkpoint the Trainer could restore, with `hyper_parameters` as given (the model's class added to a
    mapping)."""
    if hyper_parameters is None or isinstance(hyper_parameters, dict):
        hyper_parameters = {"_class_path": class_path, **(hyper_parameters or {})}
    torch.save({"state_dict": state_dict, "pytorch-lightning_version": "2.6.0", "epoch": 0, "global_step": 0,
                "hyper_parameters": hyper_parameters, **more}, path)
    return path


def evaluate(digitlab_main, subcommand: str, model: str, checkpoint: Path, data: Path, cwd: Path):
    return digitlab_main(subcommand, "--model", model, "--ckpt_path", str(checkpoint), "--data.data_dir", str(data),
                         *SMALL_RUN, cwd=cwd)


def assert_one_paragraph(result, *fragments: str) -> None:
    assert_user_error(result, *fragments)
    errors = [line for line in result.stderr.splitlines() if line.startswith("digitlab: error:")]
    assert len(errors) == 1 and all(f in errors[0] for f in fragments), result.stderr
    assert "mmap" not in result.stderr


def assert_no_run_folder(root: Path) -> None:
    logs = root / "lightning_logs"
    assert not logs.exists() or not any(logs.rglob("*.*")), sorted(logs.rglob("*"))


NOT_A_MAPPING = {"a string": "num_classes: 10", "a list": [("num_classes", 10)], "an int": 10,
                 "names that are not strings": {1: 10}}


@pytest.mark.parametrize("hyper_parameters", NOT_A_MAPPING.values(), ids=NOT_A_MAPPING.keys())
def test_hyperparameters_that_are_not_a_mapping(hyper_parameters, data, tmp_path, digitlab_main):
    checkpoint = checkpoint_file(tmp_path / "odd.ckpt", CENTROID, weights(CENTROID), hyper_parameters)
    for result in (evaluate(digitlab_main, "test", "centroid", checkpoint, data, tmp_path),
                   digitlab_main("export", "--ckpt_path", str(checkpoint), cwd=tmp_path)):
        assert_one_paragraph(result, str(checkpoint), "its hyper_parameters is", "not a mapping of names")
    assert_no_run_folder(tmp_path)


@pytest.mark.parametrize("datamodule_hyper_parameters", ["batch_size: 3", [1, 2], 7])
def test_data_hyperparameters_that_are_not_a_mapping(datamodule_hyper_parameters, tmp_path):
    from digitlab.deploy.loading import load_model

    checkpoint = checkpoint_file(tmp_path / "odd.ckpt", CENTROID, weights(CENTROID),
                                 datamodule_hyper_parameters=datamodule_hyper_parameters)
    with pytest.raises(UserError, match="its datamodule_hyper_parameters is a"):
        load_model(str(checkpoint))


def poisoned(class_path: str, value: float, which: int = -1) -> tuple[dict, str]:
    """The model's weights with one value of one floating-point tensor replaced; the tensor's name."""
    state = weights(class_path)
    name = [k for k, v in state.items() if v.is_floating_point()][which]
    state[name].view(-1)[0] = value
    return state, name


NON_FINITE = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")}


@pytest.mark.parametrize("value", NON_FINITE.values(), ids=NON_FINITE.keys())
@pytest.mark.parametrize("subcommand", ["test", "validate", "predict"])
def test_non_finite_weights_are_refused_before_an_evaluation(subcommand, value, data, tmp_path, digitlab_main):
    state, name = poisoned(CENTROID, value)
    checkpoint = checkpoint_file(tmp_path / "poisoned.ckpt", CENTROID, state)
    result = evaluate(digitlab_main, subcommand, "centroid", checkpoint, data, tmp_path)
    assert_one_paragraph(result, str(checkpoint), f"'{name}'", "NaN or infinite")
    assert_no_run_folder(tmp_path)


def test_finite_weights_of_the_same_kind_are_evaluated(data, tmp_path, digitlab_main):
    checkpoint = checkpoint_file(tmp_path / "clean.ckpt", CENTROID, weights(CENTROID))
    result = evaluate(digitlab_main, "test", "centroid", checkpoint, data, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize("class_path, which", [(CENTROID, 0), (MLP, 0), (MLP, -1)])
@pytest.mark.parametrize("value", NON_FINITE.values(), ids=NON_FINITE.keys())
def test_non_finite_weights_are_refused_by_export_and_serve_loading(class_path, which, value, tmp_path,
                                                                      digitlab_main):
    from digitlab.deploy.loading import load_model

    state, name = poisoned(class_path, value, which)
    checkpoint = checkpoint_file(tmp_path / "poisoned.ckpt", class_path, state)
    result = digitlab_main("export", "--ckpt_path", str(checkpoint), "--output", str(tmp_path / "m.onnx"),
                           cwd=tmp_path)
    assert_one_paragraph(result, f"'{name}'", "NaN or infinite")
    assert not (tmp_path / "m.onnx").exists()
    with pytest.raises(UserError, match=f"'{name}' holds NaN or infinite"):
        load_model(str(checkpoint))


OVERSIZED = {
    "centroid classes": ("centroid", CENTROID, {"num_classes": UNALLOCATABLE}),
    "mlp classes": ("mlp", MLP, {"num_classes": UNALLOCATABLE}),
    "mlp hidden units": ("mlp", MLP, {"hidden_size": 4096}),
    "mlp, the issue's example": ("mlp", MLP, {"num_classes": 5_000_000}),
}


@pytest.mark.parametrize("model, class_path, hyperparameters", OVERSIZED.values(), ids=OVERSIZED.keys())
def test_hyperparameters_far_from_the_weights_are_refused_before_building(model, class_path, hyperparameters, data,
                                                                          tmp_path, digitlab_main, monkeypatch):
    from digitlab.models.mlp import ScratchMLP

    checkpoint = checkpoint_file(tmp_path / "big.ckpt", class_path, weights(class_path), hyperparameters)
    # Where the MLP makes each parameter: nothing may be made off the meta device (where nothing is allocated).
    made_on, make = [], ScratchMLP._init
    monkeypatch.setattr(ScratchMLP, "_init", staticmethod(lambda noise, *a, **k: made_on.append(noise.device.type)
                                                          or make(noise, *a, **k)))
    result = evaluate(digitlab_main, "test", model, checkpoint, data, tmp_path)
    assert_one_paragraph(result, str(checkpoint), "does not hold weights of the configured", "expected")
    assert_no_run_folder(tmp_path)
    result = digitlab_main("export", "--ckpt_path", str(checkpoint), cwd=tmp_path)
    assert_one_paragraph(result, str(checkpoint), "do not fit that class", "expected")
    assert set(made_on) <= {"meta"} and (model != "mlp" or made_on)


def damaged_archive(path: Path) -> None:
    buffer = io.BytesIO()
    torch.save({"state_dict": weights(CENTROID)}, buffer)
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])


def foreign_zip(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "a zip archive, but not one torch.save wrote")


NOT_CHECKPOINTS = {
    "empty": (lambda p: p.write_bytes(b""), "it is empty"),
    "text": (lambda p: p.write_text("epoch: 3\nstate_dict: {}\n"), "not the zip archive"),
    "random bytes": (lambda p: p.write_bytes(os.urandom(4096)), "not the zip archive"),
    "a legacy pickle": (lambda p: torch.save({"state_dict": {}}, p, _use_new_zipfile_serialization=False),
                        "not the zip archive"),
    "half an archive": (damaged_archive, "is not a readable checkpoint"),
    "another zip": (foreign_zip, "damaged or incomplete"),
    "a folder": (lambda p: p.mkdir(), "is a folder, not a checkpoint file"),
}


@pytest.mark.parametrize("write, said", NOT_CHECKPOINTS.values(), ids=NOT_CHECKPOINTS.keys())
def test_a_file_that_is_not_a_checkpoint_is_one_line(write, said, data, tmp_path, digitlab_main):
    bad = tmp_path / "bad.ckpt"
    write(bad)
    for result in (evaluate(digitlab_main, "test", "centroid", bad, data, tmp_path),
                   digitlab_main("export", "--ckpt_path", str(bad), cwd=tmp_path)):
        assert_one_paragraph(result, str(bad), said)
    assert_no_run_folder(tmp_path)


@pytest.mark.slow  # a new process, so that a hang fails the test instead of blocking the suite
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
@pytest.mark.parametrize("subcommand", ["test", "export"])
def test_a_fifo_is_refused_without_opening_it(subcommand, data, tmp_path):
    fifo = tmp_path / "pipe.ckpt"
    os.mkfifo(fifo)
    args = ["--model", "centroid", "--data.data_dir", str(data), *SMALL_RUN] if subcommand == "test" else []
    # Opening a FIFO for reading blocks until a writer comes: the timeout turns a regression into a failure.
    result = run_digitlab(subcommand, "--ckpt_path", str(fifo), *args, cwd=tmp_path, timeout=300)
    assert_one_paragraph(result, str(fifo), "not a regular file")


def test_hyperparameters_too_large_even_for_the_meta_device_are_one_paragraph(data, tmp_path, digitlab_main):
    # 10**12 hidden units: a weight of 10**24 numbers, more than torch can count even on the meta device.
    checkpoint = checkpoint_file(tmp_path / "huge.ckpt", MLP, weights(MLP), {"hidden_size": UNALLOCATABLE})
    result = evaluate(digitlab_main, "test", "mlp", checkpoint, data, tmp_path)
    assert_one_paragraph(result, "The model mlp cannot be built", f"hidden_size={UNALLOCATABLE}", "choose smaller")
    assert_no_run_folder(tmp_path)
    result = digitlab_main("export", "--ckpt_path", str(checkpoint), cwd=tmp_path)
    assert_one_paragraph(result, str(checkpoint), "do not fit that class")


TOO_LARGE_SETTINGS = {
    "mlp hidden units, beyond counting": ("mlp", "hidden_size", UNALLOCATABLE),
    "mlp hidden units, beyond memory": ("mlp", "hidden_size", 300_000),
    "centroid classes": ("centroid", "num_classes", UNALLOCATABLE),
}


@pytest.mark.parametrize("model, key, value", TOO_LARGE_SETTINGS.values(), ids=TOO_LARGE_SETTINGS.keys())
def test_settings_that_make_a_model_too_large_to_build_are_one_paragraph(model, key, value, data, tmp_path,
                                                                        digitlab_main):
    result = digitlab_main("fit", "--model", model, f"--model.init_args.{key}", str(value), "--data.data_dir",
                           str(data), *SMALL_RUN, cwd=tmp_path)
    assert_one_paragraph(result, f"The model {model} cannot be built", f"{key}={value}", "choose smaller")
    assert_no_run_folder(tmp_path)
