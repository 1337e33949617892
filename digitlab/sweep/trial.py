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

from digitlab.errors import TrainingDiverged, UserError
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
    exception, Ctrl-C included, is raised again once the study knows)."""
    trial = claim.trial
    study.sampler = setup.sweep.make_sampler(trial.number)  # before the first suggestion: see make_sampler
    value, state, error = None, TrialState.FAIL, None
    try:
        value, state = run_trial(trial, setup), TrialState.COMPLETE
    except optuna.TrialPruned:
        state = TrialState.PRUNED
    except BaseException as exception:  # noqa: B036 (Ctrl-C and SIGTERM must fail the trial too)
        error = exception
        trial.set_user_attr("stopped", _why(exception))
    finally:
        claim.heartbeat.join()
        frozen = study.tell(trial, value, state=state, skip_if_finished=True)
    if error is not None:
        raise error
    return frozen


def _why(exception: BaseException) -> str:
    if isinstance(exception, KeyboardInterrupt):
        return "Ctrl-C"
    if isinstance(exception, SIGTERMException):
        return "SIGTERM"
    return f"{type(exception).__name__}: {exception}"[:500]


def run_trial(trial: optuna.Trial, setup: SweepSetup) -> float:
    """Fit with the trial's values; return the best objective, or raise `optuna.TrialPruned`.

    Recorded in the trial's user attributes: its run folder, host and process, the seconds inside
    `trainer.fit`, the validations run, and its config.yaml (`best.yaml` is made from it, on any machine).
    Ctrl-C arrives as `KeyboardInterrupt` (Lightning turns it into an exit), SIGTERM as Lightning's
    `SIGTERMException`; a diverged training (NaN loss) is a pruned trial, not a failure of the sweep.
    """
    values = {key: suggest(trial, key, distribution) for key, distribution in setup.sweep.space.items()}
    folder = _claim_run_folder(setup.folder, trial.number)
    trial.set_user_attr("run", {"folder": str(folder.resolve()), "host": socket.gethostname(), "pid": os.getpid()})
    pruning = ReportToOptuna(trial, setup.sweep.objective, setup.sweep.maximize)
    cli = None
    try:
        cli = TrialCLI(setup.run_config.trial_args(values), TrialLogger(folder, setup.name, trial.number), [pruning])
    except TrainingDiverged as error:
        trial.set_user_attr("stopped", str(error).split(";")[0])
        raise optuna.TrialPruned(str(error)) from None
    except SystemExit:
        if isinstance(pruning.exception, KeyboardInterrupt):
            raise KeyboardInterrupt from None
        raise
    finally:
        _record(trial, folder, pruning, cli)
    if pruning.pruned_after is not None:
        raise optuna.TrialPruned(f"pruned after validation {pruning.pruned_after}")
    if pruning.best is None:
        raise UserError(f"Trial {trial.number} ran no validation, so it has no {setup.sweep.objective}. A sweep "
                        "needs validation in every trial: check data.val_split and trainer.limit_val_batches.")
    return pruning.best


def _claim_run_folder(sweep_folder: Path, number: int) -> Path:
    folder = sweep_folder / f"trial_{number}"
    try:
        folder.mkdir(parents=True)  # atomic: two workers can never share a trial's folder
    except FileExistsError:
        raise UserError(f"{folder} already exists, so trial {number} of this sweep has nowhere to run: the folder "
                        "holds a trial of an earlier sweep of the same name that is not in this storage. Move "
                        "that folder away, or give the sweep another --name.") from None
    return folder


def _record(trial: optuna.Trial, folder: Path, pruning: ReportToOptuna, cli: Optional[TrialCLI]) -> None:
    trial.set_user_attr("validations", pruning.validations)
    if cli is not None and cli.fit_seconds is not None:
        trial.set_user_attr("fit_seconds", round(cli.fit_seconds, 3))
    config = folder / "config.yaml"
    if config.is_file():
        trial.set_user_attr("config", config.read_text())
