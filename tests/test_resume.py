"""Interruption and resume with real signals: SIGKILL in an epoch, Ctrl-C or SIGTERM in a training batch, in
a validation batch or in the test after fit, then `--ckpt_path last`, ends with the same weights and metrics as
an uninterrupted run; Ctrl-C and SIGTERM sent from outside save `last.ckpt` and stop cleanly."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import run_digitlab, write_mnist_like
from waiting import running, wait_for

pytestmark = pytest.mark.slow  # every test trains `digitlab fit` processes and signals them

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


# Touches a file when training starts a chosen batch: what a test waits for before it signals from outside.
ARRIVED_AT = """
from pathlib import Path
from lightning.pytorch import Callback


class ArrivedAt(Callback):
    def __init__(self, path: str, epoch: int, batch: int) -> None:
        self.path, self.epoch, self.batch = path, epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if (trainer.current_epoch, batch_idx) == (self.epoch, self.batch):
            Path(self.path).touch()
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("resume")
    data = write_mnist_like(folder / "data", train=1200, test=200)
    config = folder / "resume.yaml"
    config.write_text(CONFIG)
    (folder / "arrived_at.py").write_text(ARRIVED_AT)
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


def start(cwd: Path, config: Path, data: Path, *args: str) -> subprocess.Popen:
    cwd.mkdir()
    env = {**os.environ, "DIGITLAB_DISABLE_PLUGINS": "1",
           "PYTHONPATH": os.pathsep.join([str(config.parent), os.environ.get("PYTHONPATH", "")])}  # arrived_at
    command = [str(Path(sys.executable).with_name("digitlab")), "fit", "--config", str(config),
               "--data.data_dir", str(data), *args]
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=_answer_ctrl_c)
    _started.append(process)
    return process


def _answer_ctrl_c() -> None:
    # A shell's background job ignores SIGINT, and what it starts inherits that (a CI script run with `&`);
    # a user's terminal does not: give the run Python's default Ctrl-C.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_for_file(path: Path, process: subprocess.Popen, timeout: float = 300) -> None:
    try:
        wait_for(path.exists, timeout, f"{path} to appear", alive=running(process), interval=0.01)
    except AssertionError as error:
        if process.poll() is not None:
            raise AssertionError(f"{error}\n{process.communicate()[1][-3000:]}") from None
        raise


def weights(checkpoint: Path) -> dict:
    return torch.load(checkpoint, weights_only=True)["state_dict"]


@pytest.mark.parametrize("sent, exit_code, said", [(signal.SIGINT, 130, "stopped: by Ctrl-C (SIGINT) at epoch"),
                                                     (signal.SIGTERM, 143, "stopped: by SIGTERM at epoch")])
def test_ctrl_c_and_sigterm_save_last_and_stop_cleanly(tmp_path, setup, sent, exit_code, said):
    config, data = setup
    # No last.ckpt but the interruption's, and more epochs than the run can finish before the signal lands.
    without_last = config.with_name(f"no-last-{int(sent)}.yaml")  # next to arrived_at.py
    without_last.write_text(config.read_text().replace("save_last: true", "save_last: false")
                            .replace("max_epochs: 4", "max_epochs: 1000"))
    arrived = tmp_path / "in-epoch-1"
    process = start(tmp_path / "run", without_last, data, "--trainer.callbacks+={class_path: arrived_at.ArrivedAt, "
                    f"init_args: {{path: {arrived}, epoch: 1, batch: 1}}}}")
    checkpoints = tmp_path / "run" / "lightning_logs" / "version_0" / "checkpoints"
    wait_for_file(arrived, process)  # into epoch 1, after its first step
    process.send_signal(sent)
    out, err = process.communicate(timeout=120)
    assert process.returncode == exit_code, err[-3000:]
    assert said in out + err and "Traceback" not in err
    last = torch.load(checkpoints / "last.ckpt", weights_only=True)  # written at the interruption, readable
    assert last["global_step"] > torch.load(checkpoints / "epoch=0.ckpt", weights_only=True)["global_step"]


# Sends a real signal to its own process at a chosen batch: the interruption lands at the same point every time.
SIGNAL_AT = """
import os
from lightning.pytorch import Callback


class SignalAt(Callback):
    def __init__(self, signal: int, stage: str, epoch: int, batch: int) -> None:
        self.signal, self.stage, self.epoch, self.batch = signal, stage, epoch, batch

    def _at(self, trainer, stage, batch_idx):
        if (stage, trainer.current_epoch, batch_idx) == (self.stage, self.epoch, self.batch) and not trainer.sanity_checking:
            os.kill(os.getpid(), self.signal)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._at(trainer, "train", batch_idx)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._at(trainer, "validate", batch_idx)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._at(trainer, "test", batch_idx)
"""

SEED_CONFIG = """
seed_everything: 7
model: lenet5
data:
  val_split: 300
  batch_size: 64
  eval_batch_size: 64  # several validation and test batches, to stop in the middle of them
  verify: false
  download: false
trainer:
  max_epochs: 3
  deterministic: true
  log_every_n_steps: 5
  enable_progress_bar: false
  enable_model_summary: false
  callbacks:
    - class_path: lightning.pytorch.callbacks.EarlyStopping
      init_args: {monitor: val/loss, mode: min, patience: 3}
    - class_path: digitlab.training.callbacks.ModelCheckpoint
      init_args: {monitor: val/acc, mode: max, save_last: true, filename: "best-{epoch:02d}"}
"""


@pytest.fixture(scope="module")
def seed_run(tmp_path_factory):
    """The config of `configs/lenet5.yaml`'s kind (early stopping, best checkpoint, last.ckpt) on small data, a
    module holding `SignalAt`, and the uninterrupted run's outcome."""
    folder = tmp_path_factory.mktemp("seed")
    data = write_mnist_like(folder / "data", train=1200, test=200)
    (folder / "signal_at.py").write_text(SIGNAL_AT)
    config = folder / "seed.yaml"
    config.write_text(SEED_CONFIG)
    reference = folder / "reference"
    reference.mkdir()
    result = run_digitlab("fit", "--config", str(config), "--data.data_dir", str(data), cwd=reference)
    assert result.returncode == 0, result.stderr[-3000:]
    return config, data, folder, outcome(reference / "lightning_logs" / "version_0", result.stdout)


def outcome(run: Path, stdout: str) -> dict:
    """What must not depend on an interruption: the final weights, the test accuracy, and every logged value."""
    from tensorboard_events import scalars

    logged = scalars(run)
    return {
        "weights": weights(run / "checkpoints" / "last.ckpt"),
        "test": stdout.split("Test accuracy:")[1].split()[0],
        **{tag: logged.get(tag, []) for tag in ("val/acc", "val/acc_best", "train/acc", "train/loss_epoch")},
    }


@pytest.mark.parametrize("sent, stage, epoch, batch", [
    (signal.SIGINT, "validate", 1, 2),
    (signal.SIGTERM, "train", 1, 7),
    (signal.SIGINT, "test", 3, 1),  # after 3 epochs
    (signal.SIGKILL, "train", 2, 3),  # no handler, nothing saved: resumed from the end of epoch 1
])
def test_interrupted_anywhere_then_resumed_equals_the_uninterrupted_run(tmp_path, seed_run, sent, stage, epoch, batch,
                                                                        digitlab_main):
    config, data, folder, expected = seed_run
    env = {"PYTHONPATH": os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")])}
    signal_at = f"{{class_path: signal_at.SignalAt, init_args: {{signal: {int(sent)}, stage: {stage}, epoch: {epoch}, batch: {batch}}}}}"
    stopped = run_digitlab("fit", "--config", str(config), "--data.data_dir", str(data),
                           f"--trainer.callbacks+={signal_at}", cwd=tmp_path, env=env)
    if sent == signal.SIGKILL:
        assert stopped.returncode == -signal.SIGKILL, stopped.stderr[-3000:]
        last = torch.load(tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)
        assert last["epoch"] == 1  # the last complete epoch's
    else:
        assert stopped.returncode == (130 if sent == signal.SIGINT else 143), stopped.stderr[-3000:]
        assert "Traceback" not in stopped.stderr and "digitlab: stopped: by" in stopped.stderr

    resumed = digitlab_main("fit", "--config", str(config), "--data.data_dir", str(data), "--ckpt_path", "last",
                            cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "not resumable" not in resumed.stderr and "dirpath has changed" not in resumed.stderr
    # A fit stopped in its test had finished training: resuming it trains nothing and saves nothing new.
    final = "version_0" if stage == "test" else "version_1"
    got = outcome(tmp_path / "lightning_logs" / final, resumed.stdout)
    assert got["weights"].keys() == expected["weights"].keys()
    assert all(torch.equal(got["weights"][k], expected["weights"][k]) for k in got["weights"])
    assert got["test"] == expected["test"]
    for tag in ("val/acc", "val/acc_best", "train/acc", "train/loss_epoch"):  # the resumed epochs' values
        assert got[tag] == expected[tag][len(expected[tag]) - len(got[tag]):], tag
