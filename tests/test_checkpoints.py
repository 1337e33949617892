"""Checkpoints: last.ckpt after every epoch, written atomically beside its target, and loaded as data, never
as code (no class a checkpoint names is imported; a checkpoint of another model is refused up front)."""

import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from conftest import REPO, SMALL_RUN, assert_user_error, fit_one_mlp_epoch, run_digitlab, write_mnist_like
from digitlab.training.checkpoint_io import AtomicCheckpointIO
from digitlab.errors import CheckpointNotWritten

SHIPPED = sorted(p for p in (REPO / "configs").glob("*.yaml"))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_mnist_like(tmp_path_factory.mktemp("data"), train=200, test=50)


@pytest.fixture(scope="module")
def mlp_checkpoint(tmp_path_factory, data):
    return fit_one_mlp_epoch(tmp_path_factory.mktemp("mlp"), data) / "checkpoints" / "last.ckpt"


@pytest.mark.parametrize("config", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_config_saves_last_after_every_epoch(config):
    callbacks = yaml.safe_load(config.read_text())["trainer"].get("callbacks", [])
    checkpoints = [c for c in callbacks if c["class_path"].endswith("ModelCheckpoint")]
    assert checkpoints == [] or all(c["class_path"] == "digitlab.training.callbacks.ModelCheckpoint" and
                                    c["init_args"]["save_last"] for c in checkpoints)


@pytest.mark.parametrize("config", ["mlp.yaml", None])
def test_last_ckpt_holds_the_last_epoch_even_when_val_acc_stops_improving(tmp_path, data, digitlab_main, config):
    # lr 2.0 makes the MLP diverge to a constant prediction: val/acc stops improving after the first epoch.
    chosen = ["--config", str(REPO / "configs" / config)] if config else ["--model", "mlp"]
    result = digitlab_main("fit", *chosen, "--trainer.max_epochs", "4", "--model.init_args.lr", "2.0",
                           "--data.data_dir", str(data), *SMALL_RUN, "--test_after_fit", "false", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    last = torch.load(tmp_path / "lightning_logs/version_0/checkpoints/last.ckpt", weights_only=True)
    assert last["epoch"] == 3 and last["loops"]["fit_loop"]["epoch_progress"]["total"]["processed"] == 4


def test_fast_dev_run_leaves_nothing_behind(tmp_path, data, digitlab_main):
    result = digitlab_main("fit", "--config", str(REPO / "configs/lenet5.yaml"), "--trainer.fast_dev_run", "true",
                           "--data.data_dir", str(data), *SMALL_RUN, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_on_another_filesystem_than_the_temporary_folder(tmp_path, monkeypatch):
    # /dev/shm is a tmpfs: a different filesystem from the temporary folder on disk, where Lightning's own
    # atomic save made its temporary file (the rename then failed and the fallback truncated the target).
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)) or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("no writable /dev/shm on another filesystem than the temporary folder")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    run = Path(shm / f"digitlab-test-{os.getpid()}")
    run.mkdir()
    try:
        target = run / "last.ckpt"
        AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(3)}}, target)
        assert torch.equal(torch.load(target, weights_only=True)["state_dict"]["w"], torch.ones(3))
        assert [p.name for p in run.iterdir()] == ["last.ckpt"]  # no temporary file left
        assert list(tmp_path.iterdir()) == []  # and none in the system's temporary folder
    finally:
        shutil.rmtree(run)


KILLED_WHILE_SAVING = textwrap.dedent("""
    import sys, torch
    from digitlab.training.checkpoint_io import AtomicCheckpointIO
    io, step = AtomicCheckpointIO(), 0
    while True:
        step += 1
        io.save_checkpoint({"step": step, "w": torch.full((20_000_000,), float(step))}, sys.argv[1])
        print(step, flush=True)
""")


@pytest.mark.slow  # a writer process, killed while it saves
def test_a_kill_while_saving_leaves_the_previous_complete_checkpoint(tmp_path):
    target = Path("/dev/shm") / f"digitlab-kill-{os.getpid()}" / "last.ckpt"  # 80 MB a write, on a tmpfs
    target.parent.mkdir()
    try:
        writer = subprocess.Popen([sys.executable, "-c", KILLED_WHILE_SAVING, str(target)], stdout=subprocess.PIPE, cwd=REPO,
                                  stderr=subprocess.PIPE, text=True, env={**os.environ, "TMPDIR": str(tmp_path)})
        for _ in range(3):  # killed in the middle of its fourth write at the earliest
            assert writer.stdout.readline(), writer.communicate()[1][-3000:]
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        saved = torch.load(target, weights_only=True)
        assert saved["step"] >= 3 and bool((saved["w"] == saved["step"]).all())  # complete, never torn
    finally:
        shutil.rmtree(target.parent)


def test_a_full_disk_keeps_the_previous_checkpoint(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root): a full disk is not tested")
    try:
        target, best = mount / "last.ckpt", mount / "best-epoch=01.ckpt"
        with pytest.raises(CheckpointNotWritten, match="has no last.ckpt to resume from yet") as refused:
            AtomicCheckpointIO().save_checkpoint({"w": torch.ones(1_000_000)}, best)  # 4 MB: does not fit
        assert "No space left on device" in str(refused.value) and "--ckpt_path last" not in str(refused.value)
        AtomicCheckpointIO().save_checkpoint({"w": torch.ones(10)}, target)
        with pytest.raises(CheckpointNotWritten, match="No space left on device") as refused:
            AtomicCheckpointIO().save_checkpoint({"w": torch.ones(1_000_000)}, target)
        assert "The previous one is unchanged" in str(refused.value) and "--ckpt_path last" in str(refused.value)
        assert torch.equal(torch.load(target, weights_only=True)["w"], torch.ones(10))
        assert [p.name for p in mount.iterdir()] == ["last.ckpt"]
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def _forged(source: Path, destination: Path, change) -> Path:
    checkpoint = torch.load(source, weights_only=True)
    change(checkpoint)
    torch.save(checkpoint, destination)
    return destination


@pytest.mark.slow  # the console script: a new interpreter, where `import this` would print
def test_a_class_path_in_a_checkpoint_is_never_imported(tmp_path, data, mlp_checkpoint):
    forged = _forged(mlp_checkpoint, tmp_path / "forged.ckpt", lambda c: c["hyper_parameters"].update(
        optimizer={"class_path": "this.Anything", "init_args": {}}))
    result = run_digitlab("test", "--model", "mlp", "--ckpt_path", str(forged), "--data.data_dir", str(data),
                          *SMALL_RUN, cwd=tmp_path)
    assert_user_error(result, "this.Anything", "torch.optim")
    assert "Beautiful is better than ugly" not in result.stdout + result.stderr  # `import this` never ran
    assert not (tmp_path / "lightning_logs").exists()


@pytest.mark.parametrize("change, said", [
    (lambda c: c.pop("hyper_parameters"), "does not hold weights of the configured LeNet5"),
    (lambda c: [c.pop(k) for k in list(c) if k != "state_dict"], "not a Lightning checkpoint"),
    (lambda c: c["hyper_parameters"].update(depth=3), "depth"),
])
def test_a_checkpoint_that_does_not_fit_is_refused_before_any_run_folder(tmp_path, data, mlp_checkpoint, change,
                                                                           said, digitlab_main):
    forged = _forged(mlp_checkpoint, tmp_path / "forged.ckpt", change)
    model = "lenet5" if "LeNet5" in said else "mlp"
    result = digitlab_main("test", "--model", model, "--ckpt_path", str(forged), "--data.data_dir", str(data),
                           *SMALL_RUN, cwd=tmp_path)
    assert_user_error(result, str(forged), said)
    assert not (tmp_path / "lightning_logs").exists() or not any((tmp_path / "lightning_logs").iterdir())


def test_weights_only_false_loads_a_checkpoint_that_needs_unpickling(tmp_path, data, mlp_checkpoint, digitlab_main):
    pickled = _forged(mlp_checkpoint, tmp_path / "pickled.ckpt", lambda c: c.update(note=pickle.PickleError("x")))
    refused = digitlab_main("test", "--model", "mlp", "--ckpt_path", str(pickled), "--data.data_dir", str(data),
                            *SMALL_RUN, cwd=tmp_path)
    assert_user_error(refused, "weights-only loading refuses it", "--weights_only false")
    allowed = digitlab_main("test", "--model", "mlp", "--ckpt_path", str(pickled), "--weights_only", "false",
                            "--data.data_dir", str(data), *SMALL_RUN, cwd=tmp_path)
    assert allowed.returncode == 0, allowed.stderr[-3000:]
    assert "Test accuracy:" in allowed.stdout


def test_a_folder_given_as_checkpoint_says_so(tmp_path, data, mlp_checkpoint, digitlab_main):
    result = digitlab_main("test", "--model", "mlp", "--ckpt_path", str(mlp_checkpoint.parent),
                           "--data.data_dir", str(data), *SMALL_RUN, cwd=tmp_path)
    assert_user_error(result, "is a folder, not a checkpoint file", "last.ckpt")
