"""One trial: an ordinary `digitlab fit` in this process, in its own run folder, reporting to Optuna."""

from __future__ import annotations

import os
import socket
import time
from argparse import Namespace
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import optuna
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from optuna.trial import FrozenTrial, TrialState

from digitlab.errors import Stopped, TrainingDiverged, UserError
from digitlab.sweep.pruning import ReportToOptuna
from digitlab.sweep.run_config import FitCLI, RunConfig
from digitlab.sweep.storage import Claim
from digitlab.sweep.sweep_file import SweepFile, suggest


class TrialLogger(TensorBoardLogger):
    """TensorBoard in the trial's own folder, ``lightning_logs/sweeps/NAME/trial_N``. The hyperparameters also
    hold the sweep's name (`sweep`) and the trial's number (`sweep_trial`), and the HParams tab shows
    `sweep/pruned`: 0, or 1 once Optuna pruned the trial."""

    def __init__(self, folder: Path, sweep: str, number: int) -> None:
        super().__init__(save_dir=folder.parent.parent, name=folder.parent.name, version=folder.name)
        self.sweep_hparams = {"sweep": sweep, "sweep_trial": number}

    def log_hyperparams(self, params: Any, metrics: Optional[Any] = None, step: Optional[int] = None) -> None:
        params = {**(vars(params) if isinstance(params, Namespace) else dict(params)), **self.sweep_hparams}
        if metrics is None and self._default_hp_metric:  # Lightning's own default, kept
            metrics = {"hp_metric": -1}
        elif metrics is not None and not isinstance(metrics, dict):
            metrics = {"hp_metric": metrics}
        super().log_hyperparams(params, {**(metrics or {}), "sweep/pruned": 0.0}, step)


class TrialCLI(FitCLI):
    """`digitlab fit` with the trial's logger and callbacks, which stay out of the saved config.yaml: the
    trial's config replays with `digitlab fit --config` into a new run folder, without Optuna."""

    def __init__(self, args: list[str], logger: TrialLogger, callbacks: list[Callback]) -> None:
        self.trial_logger, self.trial_callbacks = logger, callbacks
        self.fit_seconds: Optional[float] = None
        self._fit_started = 0.0
        super().__init__(args=args)

    def before_instantiate_classes(self) -> None:
        super().before_instantiate_classes()
        callbacks = self.trainer_defaults.get("callbacks", [])
        self.trainer_defaults = {**self.trainer_defaults, "callbacks": [*callbacks, *self.trial_callbacks]}

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        return super().instantiate_trainer(**{**kwargs, "logger": self.trial_logger})

    def before_fit(self) -> None:
        self._fit_started = time.perf_counter()

    def after_fit(self) -> None:
        self.fit_seconds = time.perf_counter() - self._fit_started
        super().after_fit()


@dataclass
class SweepSetup:
    """What every trial of this worker shares."""

    name: str
    folder: Path  # lightning_logs/sweeps/NAME
    sweep: SweepFile
    run_config: RunConfig


def run_and_tell(study: optuna.Study, claim: Claim, setup: SweepSetup) -> FrozenTrial:
    """Run the claimed trial and tell the study how it ended: COMPLETE with its value, PRUNED, or FAIL (the
    exception, Ctrl-C included, is raised again once the study knows).

    Recorded in the trial's user attributes: its run folder, host and process, the seconds inside
    `trainer.fit`, the validations run, why it stopped early, and its config.yaml (`best.yaml` is made from
    it, on any machine).
    """
    trial = claim.trial
    study.sampler = setup.sweep.make_sampler(trial.number)  # before the first suggestion: see make_sampler
    run, value, state, error = None, None, TrialState.FAIL, None
    try:
        run = TrialRun(trial, setup)
        value, state = run.fit(), TrialState.COMPLETE
    except optuna.TrialPruned:
        state = TrialState.PRUNED
    except BaseException as exception:  # noqa: B036 (Ctrl-C and SIGTERM must fail the trial too)
        error = exception
    finally:
        claim.heartbeat.join()
        if error is not None and not isinstance(error, Exception):
            # Ctrl-C may have struck inside a database call, leaving its session half-way: start a new one.
            claim.storage.remove_session()
        if run is not None:
            run.record(_why(error) if error is not None else None)
        frozen = study.tell(trial, value, state=state, skip_if_finished=True)
    if error is not None:
        raise error
    return frozen


def _why(exception: BaseException) -> str:
    if isinstance(exception, Stopped):
        return "Ctrl-C" if exception.exit_code == 130 else "SIGTERM"
    if isinstance(exception, KeyboardInterrupt):
        return "Ctrl-C"
    if isinstance(exception, SIGTERMException):
        return "SIGTERM"
    return f"{type(exception).__name__}: {exception}"[:500]


class TrialRun:
    """A trial as a run: its values, its folder (claimed at once), and the fit."""

    def __init__(self, trial: optuna.Trial, setup: SweepSetup) -> None:
        self.trial, self.setup = trial, setup
        self.values = {key: suggest(trial, key, distribution) for key, distribution in setup.sweep.space.items()}
        self.folder = _claim_run_folder(setup.folder, trial.number)
        trial.set_user_attr("run", {"folder": str(self.folder.resolve()), "host": socket.gethostname(),
                                    "pid": os.getpid()})
        self.pruning = ReportToOptuna(trial, setup.sweep.objective, setup.sweep.maximize)
        self.cli: Optional[TrialCLI] = None
        self.stopped: Optional[str] = None

    def fit(self) -> float:
        """Fit with the trial's values; return the best objective, or raise `optuna.TrialPruned`.

        Ctrl-C and SIGTERM stop the fit after its batch, as `Stopped` (a second Ctrl-C arrives as
        `KeyboardInterrupt`); a diverged training (NaN loss) is a pruned trial, not a failure of the sweep.
        """
        logger = TrialLogger(self.folder, self.setup.name, self.trial.number)
        try:
            self.cli = TrialCLI(self.setup.run_config.trial_args(self.values), logger, [self.pruning])
        except TrainingDiverged as error:
            self.stopped = str(error).split(";")[0]
            raise optuna.TrialPruned(str(error)) from None
        except SystemExit:
            if isinstance(self.pruning.exception, KeyboardInterrupt):
                raise KeyboardInterrupt from None
            raise
        if self.pruning.pruned_after is not None:
            raise optuna.TrialPruned(f"pruned after validation {self.pruning.pruned_after}")
        if self.pruning.best is None:
            raise UserError(f"Trial {self.trial.number} ran no validation, so it has no "
                            f"{self.setup.sweep.objective}. A sweep needs validation in every trial: check "
                            "data.val_split and trainer.limit_val_batches.")
        return self.pruning.best

    def record(self, failure: Optional[str]) -> None:
        self.trial.set_user_attr("validations", self.pruning.validations)
        if self.cli is not None and self.cli.fit_seconds is not None:
            self.trial.set_user_attr("fit_seconds", round(self.cli.fit_seconds, 3))
        if failure or self.stopped:
            self.trial.set_user_attr("stopped", failure or self.stopped)
        config = self.folder / "config.yaml"
        if config.is_file():
            self.trial.set_user_attr("config", config.read_text())


def _claim_run_folder(sweep_folder: Path, number: int) -> Path:
    folder = sweep_folder / f"trial_{number}"
    try:
        folder.mkdir(parents=True)  # atomic: two workers can never share a trial's folder
    except FileExistsError:
        raise UserError(f"{folder} already exists, so trial {number} of this sweep has nowhere to run: the folder "
                        "holds a trial of an earlier sweep of the same name that is not in this storage. Move "
                        "that folder away, or give the sweep another --name.") from None
    return folder
