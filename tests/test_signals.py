"""Ctrl-C and SIGTERM at every phase of a command's life, with real signals: training (a double press, and a
second press later), before the trainer's loops and while the run is built, after training, during `predict`,
between two sweep trials, during a sweep's final writes, and during `export`. Every case ends with exit code 130
or 143, one line saying what was saved, no traceback, and nothing half-written or left RUNNING.

The signals come from the process itself, from a callback (or a patched function) at a chosen point, so that each
lands at the same place every time; a double press is two signals a few milliseconds apart."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch

from conftest import SMALL_RUN, run_digitlab, write_mnist_like
from sweep_helpers import fit_args, states, write_noisy_mnist, write_sweep_file

pytestmark = pytest.mark.slow  # every test starts `digitlab` processes

SIGNAL_AT = '''
import os
import signal
import time
from pathlib import Path

from lightning.pytorch import Callback

INSTANCES = []


class SignalAt(Callback):
    """Send `signals` to this process the `at`-th time `hook` runs, `gap` seconds apart; `record` gets a line
    each time the hook runs. Hook "init": when the callback is made (while the run is built), counting the
    callbacks made in this process (a sweep makes one per trial)."""

    def __init__(self, hook: str, signals: list, at: int = 1, gap: float = 0.0, record: str = "") -> None:
        self.hook, self.signals, self.at, self.gap, self.record, self.count = hook, signals, at, gap, record, 0
        INSTANCES.append(self)
        if hook == "init" and len(INSTANCES) == at:
            self._send()

    def _hit(self, hook: str) -> None:
        if hook != self.hook:
            return
        self.count += 1
        if self.record:
            with open(self.record, "a") as record:
                record.write(f"{hook} {self.count}\\n")
        if self.count == self.at:
            self._send()

    def _send(self) -> None:
        for index, name in enumerate(self.signals):
            if index:
                time.sleep(self.gap)
            os.kill(os.getpid(), getattr(signal, name))

    def setup(self, trainer, pl_module, stage):
        self._hit("setup")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._hit("train_batch")

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._hit("predict_batch")

    def on_fit_end(self, trainer, pl_module):
        self._hit("fit_end")
'''

CODES = {"SIGINT": 130, "SIGTERM": 143}
NAMES = {"SIGINT": "Ctrl-C (SIGINT)", "SIGTERM": "SIGTERM"}


@pytest.fixture(scope="module")
def plugin(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("signal_at")
    (folder / "signal_at.py").write_text(SIGNAL_AT)
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_mnist_like(tmp_path_factory.mktemp("data") / "mnist", train=600, test=200)


def signal_at(hook: str, *signals: str, at: int = 1, gap: float = 0.0, record: Path | None = None) -> str:
    args = f"hook: {hook}, signals: [{', '.join(signals)}], at: {at}, gap: {gap}, record: '{record or ''}'"
    return f"--trainer.callbacks+={{class_path: signal_at.SignalAt, init_args: {{{args}}}}}"


def digitlab(plugin: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    cwd.mkdir(parents=True, exist_ok=True)
    return run_digitlab(*args, cwd=cwd, env={"PYTHONPATH": os.pathsep.join([str(plugin), os.environ.get("PYTHONPATH", "")])},
                        timeout=300)


def fit(plugin: Path, data: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return digitlab(plugin, cwd, "fit", "--model", "lenet5", "--data.data_dir", str(data), *SMALL_RUN,
                    "--trainer.max_epochs", "50", *args)


def assert_stopped(result: subprocess.CompletedProcess, sent: str, *said: str) -> None:
    """Exit code of the first signal, its name and `said` in one line on stderr, no traceback."""
    assert result.returncode == CODES[sent], result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "Detected KeyboardInterrupt" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("digitlab: stopped")]
    assert len(lines) == 1, result.stderr[-3000:]
    for fragment in (f"by {NAMES[sent]}", *said):
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("first, second", [("SIGINT", "SIGINT"), ("SIGTERM", "SIGINT"), ("SIGINT", "SIGTERM")])
def test_a_double_press_in_training_saves_last_and_stops_once(tmp_path, plugin, data, first, second):
    result = fit(plugin, data, tmp_path, signal_at("train_batch", first, second, at=3, gap=0.007))
    checkpoints = tmp_path / "lightning_logs" / "version_0" / "checkpoints"
    assert_stopped(result, first, "at epoch 0, step 3", "saved lightning_logs/version_0/checkpoints/last.ckpt", "--ckpt_path last")
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["global_step"] == 3  # whole and readable
    assert "Test accuracy" not in result.stdout


def test_pressing_again_later_stops_at_once_and_says_nothing_was_saved(tmp_path, plugin, data):
    # The second press comes while the batch still runs (the callback sleeps in it, as a slow batch would).
    result = fit(plugin, data, tmp_path, signal_at("train_batch", "SIGINT", "SIGINT", at=3, gap=1.2))
    assert_stopped(result, "SIGINT", "at once, by a second signal", "nothing was saved at the stop",
                   "No checkpoint had been saved yet")
    assert not (tmp_path / "lightning_logs" / "version_0" / "checkpoints").exists()


@pytest.mark.parametrize("sent", ["SIGINT", "SIGTERM"])
def test_a_stop_before_the_first_batch_leaves_no_run_folder(tmp_path, plugin, data, sent):
    result = fit(plugin, data, tmp_path, signal_at("setup", sent))  # the trainer set up, no loop begun
    assert_stopped(result, sent, "before training started: no checkpoint was saved")
    assert not any((tmp_path / "lightning_logs").glob("*"))


def test_a_stop_while_the_run_is_built_leaves_no_run_folder(tmp_path, plugin, data):
    result = fit(plugin, data, tmp_path, signal_at("init", "SIGTERM"))
    assert_stopped(result, "SIGTERM", "before `digitlab fit` had finished")
    assert not any((tmp_path / "lightning_logs").glob("version_*"))


def test_a_stop_after_training_keeps_its_checkpoints_and_skips_the_test(tmp_path, plugin, data):
    result = fit(plugin, data, tmp_path, "--trainer.max_epochs", "1", signal_at("fit_end", "SIGTERM"))
    assert_stopped(result, "SIGTERM", "after training had finished", "The test after fit did not run")
    assert (tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt").is_file()
    assert "Test accuracy" not in result.stdout


@pytest.mark.parametrize("sent", ["SIGINT", "SIGTERM"])
def test_predict_stops_after_the_batch_it_is_in(tmp_path, plugin, data, sent):
    record = tmp_path / "batches.txt"
    result = digitlab(plugin, tmp_path, "predict", "--model", "lenet5", "--data.data_dir", str(data), *SMALL_RUN,
                      "--data.eval_batch_size", "10", "--predictions.csv", str(tmp_path / "predictions.csv"),
                      signal_at("predict_batch", sent, sent, at=2, gap=0.007, record=record))
    assert_stopped(result, sent, "during `predict`: no predictions were written")
    assert record.read_text().split("\n")[:-1] == ["predict_batch 1", "predict_batch 2"]  # of 20 batches
    assert not (tmp_path / "predictions.csv").exists()
    assert not any((tmp_path / "lightning_logs").glob("predict_*"))


def test_a_sweep_stopped_while_setting_up_its_next_trial_fails_that_trial(tmp_path, plugin):
    data = write_noisy_mnist(tmp_path / "data", train=400)
    sweep = write_sweep_file(tmp_path / "sweep.yaml", trials=3, max_epochs=1)
    result = digitlab(plugin, tmp_path, "sweep", "--sweep", str(sweep), "--name", "stopped",
                      *fit_args(data, signal_at("init", "SIGTERM", at=2)))  # the second trial's callbacks
    assert_stopped_sweep(result, "SIGTERM", "stopped by SIGTERM; the running trial (if any) is marked FAIL")
    study = optuna.load_study(study_name="stopped", storage=f"sqlite:///{tmp_path / 'lightning_logs/sweeps/stopped/study.db'}")
    assert states(study) == {0: "COMPLETE", 1: "FAIL"}, states(study)
    assert study.trials[1].user_attrs["stopped"] == "SIGTERM"


# Runs a sweep with the function that writes its results sending a signal to its own process: `where` is
# "before" (the signal lands before any file is written) or "inside" (while best.yaml is being written).
FINAL_WRITES = '''
import os, signal, sys
import digitlab.sweep.command as command
import digitlab.utils.atomic as atomic

where, sent = sys.argv[1], getattr(signal, sys.argv[2])
original_results, original_fsync = command.write_results, atomic._fsync_file

def write_results(*args, **kwargs):
    if where == "before":
        os.kill(os.getpid(), sent)
    return original_results(*args, **kwargs)

def fsync_file(path):
    if where == "inside" and path.name.startswith(".best.yaml"):
        os.kill(os.getpid(), sent)
    return original_fsync(path)

command.write_results, atomic._fsync_file = write_results, fsync_file
from digitlab.cli import main
main(sys.argv[3:])
'''


@pytest.mark.parametrize("where, sent", [("before", "SIGTERM"), ("inside", "SIGINT")])
def test_a_sweep_stopped_during_its_final_writes_says_so_and_leaves_whole_files(tmp_path, where, sent):
    data = write_noisy_mnist(tmp_path / "data", train=400)
    sweep = write_sweep_file(tmp_path / "sweep.yaml", trials=1, max_epochs=1)
    env = {k: v for k, v in os.environ.items() if k != "DIGITLAB_DATA_DIR"}
    result = subprocess.run([sys.executable, "-c", FINAL_WRITES, where, sent, "sweep", "--sweep", str(sweep),
                             "--name", "final", *fit_args(data)], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300, env={**env, "DIGITLAB_DISABLE_PLUGINS": "1"})
    assert_stopped_sweep(result, sent, "while writing its results; every trial is in the study")
    best = tmp_path / "lightning_logs" / "sweeps" / "final" / "best.yaml"
    if where == "inside":  # the file the signal landed in is whole
        import yaml

        assert "model" in yaml.safe_load(best.read_text())
    else:
        assert not best.exists()
    assert not list(best.parent.glob(".*.tmp"))


def assert_stopped_sweep(result: subprocess.CompletedProcess, sent: str, said: str) -> None:
    assert result.returncode == CODES[sent], result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert said.replace("SIGTERM", {"SIGINT": "Ctrl-C", "SIGTERM": "SIGTERM"}[sent]) in result.stderr, result.stderr[-3000:]


# `digitlab export` with the ONNX writer sending a signal to its own process halfway.
EXPORT = '''
import os, signal, sys
import torch.onnx

original = torch.onnx.export

def export(*args, **kwargs):
    os.kill(os.getpid(), getattr(signal, sys.argv[1]))
    return original(*args, **kwargs)

torch.onnx.export = export
from digitlab.cli import main
main(sys.argv[2:])
'''


def test_export_stopped_writes_nothing_and_says_so(tmp_path, plugin, data):
    trained = fit(plugin, data, tmp_path / "fit", "--model", "mlp", "--trainer.max_epochs", "1")
    assert trained.returncode == 0, trained.stderr[-3000:]
    checkpoint = tmp_path / "fit" / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    env = {k: v for k, v in os.environ.items() if k != "DIGITLAB_DATA_DIR"}
    result = subprocess.run([sys.executable, "-c", EXPORT, "SIGINT", "export", "--ckpt_path", str(checkpoint),
                             "--data.data_dir", str(data), "--data.verify", "false", "--output",
                             str(tmp_path / "model.onnx")], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            env={**env, "DIGITLAB_DISABLE_PLUGINS": "1"})
    assert_stopped(result, "SIGINT", "before `digitlab export` had finished")
    assert not (tmp_path / "model.onnx").exists() and not list(tmp_path.glob(".model.onnx*"))


@pytest.mark.parametrize("sent", ["SIGINT", "SIGTERM"])
def test_a_signal_during_the_shutdown_ends_the_process_by_that_signal(sent):
    code = ("import os, signal, time\nfrom digitlab.utils import stop_requests\nstop_requests.install()\n"
            "stop_requests.exit_at_once_from_now()  # as the console script, once its command is done\n"
            f"os.kill(os.getpid(), signal.{sent})\ntime.sleep(60)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert result.returncode == -getattr(signal, sent) and result.stderr == "", result.stderr
