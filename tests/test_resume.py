"""Interruption and resume with real signals: SIGKILL after an epoch, then `--ckpt_path last`, ends with the
same weights and metrics as an uninterrupted run; Ctrl-C and SIGTERM save `last.ckpt` and stop cleanly."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import run_digitlab, write_mnist_like

CONFIG = """
seed_everything: 7
model: lenet5
data:
  val_split: 200
  batch_size: 32
  verify: false
  download: false
trainer:
  max_epochs: 4
  deterministic: true
  enable_progress_bar: false
  enable_model_summary: false
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args:
        filename: "{epoch}"
        save_top_k: -1
        save_last: true
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("resume")
    data = write_mnist_like(folder / "data", train=6000, test=200)
    config = folder / "resume.yaml"
    config.write_text(CONFIG)
    return config, data


_started: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def no_run_left_behind():
    """A test that fails while its run goes on (a signal not answered) must not leave that run training."""
    yield
    while _started:
        process = _started.pop()
        if process.poll() is None:
            process.kill()
            process.wait()


def start(cwd: Path, config: Path, data: Path) -> subprocess.Popen:
    cwd.mkdir()
    env = {**os.environ, "DIGITLAB_DISABLE_PLUGINS": "1"}
    command = [str(Path(sys.executable).with_name("digitlab")), "fit", "--config", str(config),
               "--data.data_dir", str(data)]
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=_answer_ctrl_c)
    _started.append(process)
    return process


def _answer_ctrl_c() -> None:
    # A shell's background job ignores SIGINT, and what it starts inherits that (a CI script run with `&`);
    # a user's terminal does not: give the run Python's default Ctrl-C.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


def weights(checkpoint: Path) -> dict:
    return torch.load(checkpoint, weights_only=True)["state_dict"]


def test_killed_after_an_epoch_then_resumed_equals_the_uninterrupted_run(tmp_path, setup):
    config, data = setup
    uninterrupted = start(tmp_path / "a", config, data)
    out_a, err_a = uninterrupted.communicate(timeout=600)
    assert uninterrupted.returncode == 0, err_a[-3000:]

    killed = start(tmp_path / "b", config, data)
    checkpoints = tmp_path / "b" / "lightning_logs" / "version_0" / "checkpoints"
    wait_for(checkpoints / "epoch=1.ckpt", killed)
    killed.send_signal(signal.SIGKILL)
    killed.communicate(timeout=60)
    assert killed.returncode == -signal.SIGKILL
    assert not (checkpoints / "epoch=3.ckpt").exists(), "the run had finished before the kill"

    resumed = run_digitlab("fit", "--config", str(config), "--data.data_dir", str(data), "--ckpt_path", "last",
                           cwd=tmp_path / "b")
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    final_a = tmp_path / "a" / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    final_b = tmp_path / "b" / "lightning_logs" / "version_1" / "checkpoints" / "last.ckpt"  # a new run folder
    a, b = weights(final_a), weights(final_b)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    accuracy = [out.split("Test accuracy:")[1].split()[0] for out in (out_a, resumed.stdout)]
    assert accuracy[0] == accuracy[1]


@pytest.mark.parametrize("sent, exit_code, said", [(signal.SIGINT, 1, "Interrupted at epoch"),
                                                     (signal.SIGTERM, 143, "stopped by SIGTERM")])
def test_ctrl_c_and_sigterm_save_last_and_stop_cleanly(tmp_path, setup, sent, exit_code, said):
    config, data = setup
    # No last.ckpt but the interruption's, and more epochs than the run can finish before the signal lands.
    without_last = tmp_path / "no-last.yaml"
    without_last.write_text(config.read_text().replace("save_last: true", "save_last: false")
                            .replace("max_epochs: 4", "max_epochs: 1000"))
    process = start(tmp_path / "run", without_last, data)
    checkpoints = tmp_path / "run" / "lightning_logs" / "version_0" / "checkpoints"
    wait_for(checkpoints / "epoch=0.ckpt", process)
    time.sleep(0.3)  # into epoch 1
    process.send_signal(sent)
    out, err = process.communicate(timeout=120)
    assert process.returncode == exit_code, err[-3000:]
    assert said in out + err and "Traceback" not in err
    last = torch.load(checkpoints / "last.ckpt", weights_only=True)  # written at the interruption, readable
    assert last["global_step"] >= torch.load(checkpoints / "epoch=0.ckpt", weights_only=True)["global_step"]
