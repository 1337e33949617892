"""What the sweep tests share: noisy synthetic digits, sweep files, worker processes, and the study they fill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Callable, Optional

import optuna
import sqlalchemy.exc
import torch
import yaml

from conftest import REPO, synthetic_digits, write_idx
from waiting import running, wait_for

MLP = str(REPO / "configs" / "mlp.yaml")
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def write_noisy_mnist(folder: Path, train: int, test: int = 50, noise: float = 0.35) -> Path:
    """MNIST-like files whose labels are wrong for a share `noise` of the images: the best accuracy is far from
    1, so that equal accuracies of two runs say something."""
    folder.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(7)
    for prefix, count, seed in (("train", train, 1), ("t10k", test, 2)):
        images, labels = synthetic_digits(count, seed)
        wrong = torch.rand(count, generator=generator) < noise
        labels[wrong] = torch.randint(0, 10, (int(wrong.sum()),), generator=generator, dtype=torch.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels)
    return folder


def write_sweep_file(path: Path, **settings) -> Path:
    """A sweep file for the MLP: a good and a hopeless learning rate, so that the median pruner always finds
    a trial to stop; heartbeats every second."""
    content = {
        "space": {"model.init_args.lr": {"type": "categorical", "choices": [0.2, 1.0e-6]},
                  "model.init_args.hidden_size": {"type": "int", "low": 16, "high": 64, "step": 16}},
        "trials": 4,
        "max_epochs": 2,
        "sampler": {"type": "random", "seed": 0},
        "pruner": {"type": "median", "n_startup_trials": 1},
        "heartbeat_interval": 1,
        "grace_period": 2,
        **settings,
    }
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    return path


def fit_args(data: Path, *more: str, quiet: bool = True) -> list[str]:
    """A trial's run options; `quiet`: no progress bar or model summary in the run config (a sweep without
    --verbose shows neither anyway)."""
    return ["--config", MLP, "--data.data_dir", str(data), "--data.verify", "false", "--data.val_split", "100",
            "--data.batch_size", "32", "--pictures", "false", *(QUIET if quiet else []), *more]


def load_study(url: str, name: str) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=name, storage=url)


def states(study: optuna.Study) -> dict[int, str]:
    return {trial.number: trial.state.name for trial in study.get_trials(deepcopy=False)}


class Worker:
    """`digitlab sweep ...` in a process of its own, its output in files (a pipe could fill up and stall it)."""

    def __init__(self, args: list[str], cwd: Path, label: str) -> None:
        cwd.mkdir(parents=True, exist_ok=True)
        self.out, self.err = cwd / f"{label}.out", cwd / f"{label}.err"
        # One thread each, as docs/sweeps.md advises for several workers on one machine's cores.
        env = {**os.environ, "DIGITLAB_DISABLE_PLUGINS": "1", "OMP_NUM_THREADS": "1"}
        env.pop("DIGITLAB_DATA_DIR", None)
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.process = subprocess.Popen([str(Path(sys.executable).with_name("digitlab")), "sweep", *args],
                                            cwd=cwd, env=env, stdout=out, stderr=err, preexec_fn=_answer_ctrl_c)

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait(self, timeout: float = 300) -> int:
        return self.process.wait(timeout)

    def output(self) -> str:
        return self.out.read_text() + self.err.read_text()[-4000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def _answer_ctrl_c() -> None:
    # A background job of a shell ignores SIGINT, and so would what it starts: give the worker the default.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_until(condition: Callable[[], Optional[object]], worker: Worker, timeout: float = 240) -> object:
    """Poll `condition` until it returns something; fail if the worker exits first or time runs out."""

    def attempt() -> Optional[object]:
        try:
            return condition()
        except (KeyError, sqlalchemy.exc.OperationalError, sqlalchemy.exc.IntegrityError):
            return None  # no study yet, or the worker is creating its tables (and stamping their version)

    try:
        return wait_for(attempt, timeout, "the worker's trial", alive=running(worker.process), interval=0.1)
    except AssertionError as error:
        raise AssertionError(f"{error}:\n{worker.output()}") from None


def running_trial_of(study_loader: Callable[[], Optional[optuna.Study]], pid: int) -> Callable[[], Optional[object]]:
    """A condition: a RUNNING trial of process `pid` that has reported at least one value (`study_loader` gives
    None while there is no study yet)."""

    def condition() -> Optional[object]:
        study = study_loader()
        for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)) if study else []:
            if trial.user_attrs.get("run", {}).get("pid") == pid and trial.intermediate_values:
                return trial
        return None

    return condition
