"""Report a trial's objective to Optuna after every validation, and stop the fit when Optuna prunes it.

Optuna's own Lightning callback (optuna-integration) has broken across Lightning versions; this one uses
only `Callback.on_validation_end` and `trainer.should_stop`. Sweeps run each trial in one process (DDP is
refused), so the decision taken here is the trainer's whole decision.
"""

from __future__ import annotations

from typing import Optional

import optuna
from lightning.pytorch import Callback, LightningModule, Trainer

from digitlab.errors import UserError

# Shown in TensorBoard's HParams tab beside a trial's hyperparameters (which also hold `sweep`, the sweep's name,
# and `sweep_trial`, the trial's number): 0 from the start, 1 once Optuna pruned the trial.
PRUNED_METRIC = "sweep/pruned"


class ReportToOptuna(Callback):
    """After each validation: report `objective` to `trial` (step = the validation's index, so trials with
    different batch sizes compare at the same epoch) and, when Optuna says so, stop after this epoch (never at
    the end of the last one).

    `best` is the best value seen (the trial's result: the checkpoint kept is the best epoch's too);
    `pruned_after` the number of validations when the trial was pruned.
    """

    def __init__(self, trial: optuna.Trial, objective: str, maximize: bool) -> None:
        self.trial = trial
        self.objective = objective
        self.maximize = maximize
        self.validations = 0
        self.best: Optional[float] = None
        self.pruned_after: Optional[int] = None

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._log_pruned(trainer, 0.0)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        if self.objective not in trainer.callback_metrics:
            logged = ", ".join(sorted(trainer.callback_metrics)) or "nothing"
            raise UserError(f"The sweep's objective {self.objective} was not logged at validation (logged: "
                            f"{logged}). Set `objective:` in the sweep file to one of those.")
        value = float(trainer.callback_metrics[self.objective])
        self.trial.report(value, step=self.validations)
        self.validations += 1
        if self.best is None or (value > self.best if self.maximize else value < self.best):
            self.best = value
        if not _is_final(trainer) and self.trial.should_prune():
            self.pruned_after = self.validations
            trainer.should_stop = True
            self._log_pruned(trainer, 1.0)

    @staticmethod
    def _log_pruned(trainer: Trainer, value: float) -> None:
        for logger in trainer.loggers:  # the run's own record (TensorBoard: Scalars and HParams)
            logger.log_metrics({PRUNED_METRIC: value}, step=trainer.global_step)


def _is_final(trainer: Trainer) -> bool:
    """The validation at the end of the last epoch: pruning there would save nothing, and a trial that ran its
    whole budget is complete (the sampler learns more from it)."""
    last_epoch = trainer.max_epochs is not None and trainer.current_epoch + 1 >= trainer.max_epochs
    return last_epoch and trainer.is_last_batch
