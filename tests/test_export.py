"""`digitlab export`: every registered model as ONNX and TorchScript, checked against its checkpoint; files that
run without digitlab (the manual's snippets, run as written); never an overwrite, never a failed file left behind;
and checkpoints that cannot make digitlab import anything."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import onnxruntime
import pytest
import torch
from PIL import Image

from checkpoint_files import synthetic_checkpoint, write_checkpoint
from conftest import MNIST_DIR, REPO, assert_user_error, requires_mnist, write_mnist_like
from digitlab.models import registry
from digitlab.data.files import MNIST_FILES
from digitlab.data.idx import read_idx
from digitlab.errors import UserError
from digitlab.deploy.export import default_output, new_file
from digitlab.deploy.loading import load_model, model_input
from digitlab.models import DigitModel
from digitlab.models.registry import ModelEntry

BUILT_IN = ["bncnn", "centroid", "lenet5", "mlp"]
SYNTHETIC_CHECK = ("--data.verify", "false")  # the check runs on synthetic test files, not the official ones


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_mnist_like(tmp_path_factory.mktemp("export-data"), train=200, test=100)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.getbasetemp()
    return {name: synthetic_checkpoint(name, root) for name in BUILT_IN}


def run_file(path: Path, images: torch.Tensor) -> torch.Tensor:
    """Logits of an exported file on `images`, through onnxruntime or torch.jit: no digitlab code involved."""
    if path.suffix == ".onnx":
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return torch.from_numpy(session.run(["logits"], {"images": images.numpy()})[0])
    return torch.jit.load(str(path))(images)


def test_the_built_in_models_are_the_ones_tested():
    assert sorted(e.name for e in registry.model_entries() if e.source == registry.BUILTIN_SOURCE) == BUILT_IN


@pytest.mark.parametrize("format", ["onnx", "torchscript"])
@pytest.mark.parametrize("model", BUILT_IN)
def test_every_built_in_model_exports_and_checks(model, format, trained, data_dir, tmp_path, digitlab_main):
    output = tmp_path / f"exported.{'onnx' if format == 'onnx' else 'pt'}"
    result = digitlab_main("export", "--ckpt_path", str(trained[model]), "--format", format, "--output", str(output),
                           "--data.data_dir", str(data_dir), *SYNTHETIC_CHECK, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Checked on the 100 test images" in result.stdout and "0 differing predictions" in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == [output.name]  # no temporary file left
    umask = os.umask(0)
    os.umask(umask)
    assert output.stat().st_mode & 0o777 == 0o666 & ~umask  # a file like any other, not a private temporary one
    # The contract: [N, 1, 28, 28] floats in [0, 1], any N, -> [N, 10] logits, those of the checkpoint.
    checkpoint_model = load_model(str(trained[model])).model
    for batch in (1, 3, 7):
        images = model_input(torch.randint(0, 256, (batch, 28, 28), dtype=torch.uint8))
        logits = run_file(output, images)
        assert logits.shape == (batch, 10)
        torch.testing.assert_close(logits, checkpoint_model(images), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("format", ["onnx", "torchscript"])
def test_the_example_plugins_model_exports(format, data_dir, tmp_path, monkeypatch, digitlab_main):
    # Imported from its folder and registered as its entry point would (tests/test_plugins.py installs it).
    monkeypatch.syspath_prepend(str(REPO / "examples" / "plugin"))
    from digitlab_tinycnn.model import TinyCNN

    registry.discover_models()
    monkeypatch.setattr(registry, "_registry", {**registry._registry,
                                                "tinycnn": ModelEntry("tinycnn", TinyCNN, "digitlab-tinycnn")})
    checkpoint = write_checkpoint(tmp_path / "tiny.ckpt", "digitlab_tinycnn.model.TinyCNN",
                                  TinyCNN(channels=4).state_dict(), channels=4, dropout=0.1)
    result = digitlab_main("export", "--ckpt_path", str(checkpoint), "--format", format,
                           "--data.data_dir", str(data_dir), *SYNTHETIC_CHECK, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "0 differing predictions" in result.stdout
    assert (tmp_path / f"tinycnn-tiny.{'onnx' if format == 'onnx' else 'pt'}").is_file()


def test_the_default_output_is_named_after_model_run_and_checkpoint(trained, data_dir, tmp_path, digitlab_main):
    result = digitlab_main("export", "--ckpt_path", str(trained["lenet5"]), "--format", "torchscript",
                           "--data.data_dir", str(data_dir), *SYNTHETIC_CHECK, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run_folder = trained["lenet5"].parent.parent.name
    assert [p.name for p in tmp_path.iterdir()] == [f"lenet5-{run_folder}-{trained['lenet5'].stem}.pt"]
    assert default_output(load_model(str(trained["lenet5"])), "onnx").suffix == ".onnx"


def test_an_existing_file_is_never_overwritten(trained, data_dir, tmp_path, digitlab_main):
    output = tmp_path / "model.onnx"
    output.write_bytes(b"mine")
    result = digitlab_main("export", "--ckpt_path", str(trained["mlp"]), "--output", str(output),
                           "--data.data_dir", str(data_dir), *SYNTHETIC_CHECK, cwd=tmp_path)
    assert_user_error(result, str(output), "already exists")
    assert output.read_bytes() == b"mine" and [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_a_name_taken_while_exporting_is_not_replaced(tmp_path):
    target = tmp_path / "model.onnx"
    with pytest.raises(UserError, match="already exists"):
        with new_file(target) as checked:
            checked.write_bytes(b"exported")
            target.write_bytes(b"written meanwhile by another process")
    assert target.read_bytes() == b"written meanwhile by another process"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


class BatchDependent(DigitModel):
    """Negates its logits for batches larger than 2: a branch that a trace of a batch of 2 cannot capture."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.scale = torch.nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = x.flatten(1)[:, 300:310] * self.scale
        return -logits if x.shape[0] > 2 else logits


def test_a_failed_check_leaves_no_file_and_exits_1(data_dir, tmp_path, monkeypatch, digitlab_main):
    registry.discover_models()
    entry = ModelEntry("batchdependent", BatchDependent, "tests")
    monkeypatch.setattr(registry, "_registry", {**registry._registry, entry.name: entry})
    checkpoint = write_checkpoint(tmp_path / "odd.ckpt", entry.class_path, BatchDependent().state_dict())
    result = digitlab_main("export", "--ckpt_path", str(checkpoint), "--format", "torchscript", "--output",
                           str(tmp_path / "odd.pt"), "--data.data_dir", str(data_dir), *SYNTHETIC_CHECK, cwd=tmp_path)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "does not compute what" in result.stderr and "differing predictions" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd.ckpt"]


EVIL = '''
from pathlib import Path
Path(__file__).with_name("imported.marker").write_text("a checkpoint made digitlab import me")


class Net:
    pass
'''


@pytest.fixture
def evil_module(tmp_path, monkeypatch) -> Path:
    """An importable module that leaves a marker file when imported."""
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / "evil_payload.py").write_text(EVIL)
    monkeypatch.syspath_prepend(str(folder))
    return folder / "imported.marker"


def test_a_checkpoint_never_makes_digitlab_import_a_module(trained, evil_module, tmp_path, digitlab_main):
    foreign = write_checkpoint(tmp_path / "foreign.ckpt", "evil_payload.Net", {})
    result = digitlab_main("export", "--ckpt_path", str(foreign), cwd=tmp_path)
    assert_user_error(result, "foreign.ckpt", "evil_payload.Net", "not a registered digitlab model", "lenet5")
    # A real model whose recorded optimizer and instantiator name the module: they are dropped, not imported.
    checkpoint = torch.load(trained["lenet5"], weights_only=True)
    checkpoint["hyper_parameters"].update(optimizer={"class_path": "evil_payload.Net", "init_args": {}},
                                          lr_scheduler={"class_path": "evil_payload.Net"},
                                          _instantiator="evil_payload.Net")
    torch.save(checkpoint, tmp_path / "tampered.ckpt")
    assert load_model(str(tmp_path / "tampered.ckpt")).name == "lenet5"
    assert not evil_module.exists() and "evil_payload" not in sys.modules


@pytest.mark.parametrize("case", ["missing", "text", "code", "no state_dict", "no class", "wrong weights", "best",
                                  "last"])
def test_a_bad_checkpoint_is_one_clear_error(case, trained, tmp_path, digitlab_main):
    bad = tmp_path / "bad.ckpt"
    expected = {"missing": "no such file", "text": "not a readable checkpoint", "code": "weights-only loading "
                "refuses it", "no state_dict":
                "not a Lightning checkpoint", "no class": "does not name its model class",
                "wrong weights": "do not fit that class", "best": "--ckpt_path best: no run under lightning_logs",
                "last": "no run under lightning_logs"}[case]
    if case == "text":
        bad.write_text("not a checkpoint\n")
    elif case == "code":  # an object that only full unpickling (which runs code) could rebuild
        torch.save({"state_dict": {}, "options": argparse.Namespace(lr=1)}, bad)
    elif case == "no state_dict":
        torch.save({"epoch": 3}, bad)
    elif case == "no class":
        torch.save({"state_dict": {}, "hyper_parameters": {}}, bad)
    elif case == "wrong weights":
        write_checkpoint(bad, "digitlab.models.lenet.LeNet5", load_model(str(trained["mlp"])).model.state_dict())
    ckpt_path = {"best": "best", "last": "last"}.get(case, str(bad))
    before = sorted(tmp_path.iterdir())
    result = digitlab_main("export", "--ckpt_path", ckpt_path, cwd=tmp_path)
    assert_user_error(result, expected)
    assert sorted(tmp_path.iterdir()) == before  # nothing written


def readme_snippets() -> list[str]:
    """The Python blocks of the manual's page on exported models (docs/export-and-serve.md)."""
    text = (REPO / "docs" / "export-and-serve.md").read_text()
    return [block for block in re.findall(r"```python\n(.*?)```", text, re.S) if "digit.png" in block]


BLOCK_DIGITLAB = "import sys; sys.modules['digitlab'] = None  # `import digitlab` fails from here on\n"


@pytest.mark.slow  # README's snippets in a new interpreter, where digitlab cannot be imported
def test_readme_snippets_run_the_exported_files_without_digitlab(trained, data_dir, tmp_path, digitlab_main):
    snippets = readme_snippets()
    assert [("onnxruntime" in s, "torch.jit.load" in s) for s in snippets] == [(True, False), (False, True)]
    for format, name in (("onnx", "model.onnx"), ("torchscript", "model.pt")):
        result = digitlab_main("export", "--ckpt_path", str(trained["lenet5"]), "--format", format, "--output",
                               str(tmp_path / name), "--data.data_dir", str(data_dir), *SYNTHETIC_CHECK, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
    images = read_idx(data_dir / "t10k-images-idx3-ubyte.gz", MNIST_FILES["test_images"], verify=False)
    Image.fromarray(images[3].numpy()).save(tmp_path / "digit.png")
    probabilities = load_model(str(trained["lenet5"])).model(model_input(images[3:4])).softmax(dim=1)
    expected = f"digit {probabilities.argmax().item()} probability {round(probabilities.max().item(), 4)}"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    for snippet in snippets:
        result = subprocess.run([sys.executable, "-c", BLOCK_DIGITLAB + snippet], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.strip() == expected


@pytest.mark.e2e
@requires_mnist
@pytest.mark.e2e
def test_the_centroid_exports_with_no_difference_on_the_real_test_set(tmp_path, digitlab_main):
    fit = digitlab_main("fit", "--config", str(REPO / "configs" / "centroid.yaml"), "--data.data_dir", str(MNIST_DIR),
                        "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path / "run"),
                        "--trainer.enable_progress_bar", "false", "--test_after_fit", "false", "--pictures", "false",
                        cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr[-3000:]
    checkpoint = next((tmp_path / "run" / "checkpoints").glob("*.ckpt"))
    result = digitlab_main("export", "--ckpt_path", str(checkpoint), "--output", str(tmp_path / "centroid.onnx"),
                           "--data.data_dir", str(MNIST_DIR), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Checked on the 10,000 test images of {MNIST_DIR}: 0 differing predictions" in result.stdout
    assert "accuracy 0.8203" in result.stdout  # the seed's nearest-class-mean figure, through onnxruntime


def test_last_looks_under_the_given_root_dir_as_every_command_does(trained, data_dir, tmp_path, digitlab_main):
    """`--ckpt_path last --trainer.default_root_dir DIR`: the newest DIR/lightning_logs/version_*/checkpoints/last.ckpt."""
    run = tmp_path / "runs" / "lightning_logs" / "version_4" / "checkpoints"
    run.mkdir(parents=True)
    shutil.copy(trained["mlp"], run / "last.ckpt")
    work = tmp_path / "work"
    work.mkdir()
    result = digitlab_main("export", "--ckpt_path", "last", "--trainer.default_root_dir", str(tmp_path / "runs"),
                           "--format", "torchscript", "--data.data_dir", str(data_dir), *SYNTHETIC_CHECK, cwd=work)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [p.name for p in work.iterdir()] == ["mlp-version_4-last.pt"]
