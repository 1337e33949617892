"""One trial: an ordinary `digitlab fit` in this process, in its own run folder, reporting to Optuna."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import optuna
from optuna.trial import FrozenTrial, TrialState

from digitlab.errors import StopSignal, Stopped, TrainingDiverged, UserError
from digitlab.runs.folders import claim_trial_folder
from digitlab.runs.layout import RUN_CONFIG
from digitlab.sweep.pruning import PRUNED_METRIC, ReportToOptuna
from digitlab.sweep.run_config import RunConfig
from digitlab.sweep.storage import Claim
from digitlab.sweep.sweep_file import SweepFile, suggest
from digitlab.training.run import build_run, parse_run
from digitlab.utils import stop_requests


@dataclass
class SweepSetup:
    """What every trial of this worker shares."""

    name: str
    folder: Path  # lightning_logs/sweeps/NAME
    sweep: SweepFile
    run_config: RunConfig
    verbose: bool = False  # each trial's own Lightning output, or only the sweep's line per trial


def run_and_tell(study: optuna.Study, claim: Claim, setup: SweepSetup) -> FrozenTrial:
    """Run the claimed trial and tell the study how it ended: COMPLETE with its value, PRUNED, or FAIL (the
    exception, Ctrl-C included, is raised again once the study knows).

    Recorded in the trial's user attributes: its run folder, host and process, the seconds inside
    `trainer.fit`, the validations run, why it stopped early, and its config.yaml (`best.yaml` is made from
    it, on any machine).
    """
    trial = claim.trial
    run, value, state, error = None, None, TrialState.FAIL, None
    try:
        stop_requests.raise_pending()  # a stop asked for while the trial was claimed
        study.sampler = setup.sweep.make_sampler(trial.number)  # before the first suggestion: see make_sampler
        run = TrialRun(trial, setup)
        value, state = run.fit(), TrialState.COMPLETE
    except optuna.TrialPruned:
        state = TrialState.PRUNED
    except BaseException as exception:  # noqa: B036 (Ctrl-C and SIGTERM must fail the trial too)
        error = exception
    finally:
        with stop_requests.deferred():  # the study learns how the trial ended, whatever signal comes now
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
    if isinstance(exception, (Stopped, StopSignal)):
        return "Ctrl-C" if exception.exit_code == 130 else "SIGTERM"
    return f"{type(exception).__name__}: {exception}"[:500]


class TrialRun:
    """A trial as a run: its values, its folder (claimed at once), and the fit."""

    def __init__(self, trial: optuna.Trial, setup: SweepSetup) -> None:
        self.trial, self.setup = trial, setup
        self.values = {key: suggest(trial, key, distribution) for key, distribution in setup.sweep.space.items()}
        self.folder = claim_trial_folder(setup.folder, trial.number)
        trial.set_user_attr("run", {"folder": str(self.folder.resolve()), "host": socket.gethostname(),
                                    "pid": os.getpid()})
        self.pruning = ReportToOptuna(trial, setup.sweep.objective, setup.sweep.maximize)
        self.fit_seconds: Optional[float] = None
        self.stopped: Optional[str] = None

    def fit(self) -> float:
        """Fit with the trial's values; return the best objective, or raise `optuna.TrialPruned`.

        Ctrl-C and SIGTERM stop the fit after its batch, as `Stopped`; a diverged training (NaN loss) is a
        pruned trial, not a failure of the sweep.
        """
        try:
            run = build_run(parse_run("fit", self.setup.run_config.trial_args(self.values)), callbacks=[self.pruning],
                            folder=self.folder, extra_hparams={"sweep": self.setup.name, "sweep_trial": self.trial.number},
                            extra_metrics=(PRUNED_METRIC,), quiet=not self.setup.verbose)
            started = time.perf_counter()
            try:
                run.execute()
            finally:
                self.fit_seconds = time.perf_counter() - started
        except TrainingDiverged as error:
            self.stopped = str(error).split(";")[0]
            raise optuna.TrialPruned(str(error)) from None
        if self.pruning.pruned_after is not None:
            raise optuna.TrialPruned(f"pruned after validation {self.pruning.pruned_after}")
        if self.pruning.best is None:
            raise UserError(f"Trial {self.trial.number} ran no validation, so it has no "
                            f"{self.setup.sweep.objective}. A sweep needs validation in every trial: check "
                            "data.val_split and trainer.limit_val_batches.")
        return self.pruning.best

    def record(self, failure: Optional[str]) -> None:
        self.trial.set_user_attr("validations", self.pruning.validations)
        if self.fit_seconds is not None:
            self.trial.set_user_attr("fit_seconds", round(self.fit_seconds, 3))
        if failure or self.stopped:
            self.trial.set_user_attr("stopped", failure or self.stopped)
        config = self.folder / RUN_CONFIG
        if config.is_file():
            self.trial.set_user_attr("config", config.read_text())
