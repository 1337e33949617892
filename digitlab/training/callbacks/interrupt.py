"""Ctrl-C, SIGTERM and SLURM's SIGUSR1 stop a run after the current batch (every process of a DDP run after the
same one); a fit saves `last.ckpt` first, so that it resumes."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.trainer.states import RunningStage, TrainerFn, TrainerStatus
from lightning.pytorch.utilities.exceptions import SIGTERMException

from digitlab.errors import StopSignal, Stopped
from digitlab.runs.restarts import resume_hint
from digitlab.training.compat import request_stop_after_batch
from digitlab.utils import stop_requests

VAL_PROGRESS = "epoch_loop.val_loop.batch_progress"


class SaveOnInterrupt(Callback):
    """Stop cleanly on Ctrl-C (SIGINT) or SIGTERM, and make the stopped fit resumable with ``--ckpt_path last``.

    The signals themselves are handled by `digitlab.utils.stop_requests`; while the trainer runs one of its loops,
    `on_stop_request` makes it finish the current batch and stop, as Lightning does on SIGTERM (Python would
    otherwise raise `KeyboardInterrupt` wherever it is, perhaps halfway through an optimizer step). Before the
    first loop (loading data, restoring a checkpoint) the stop happens where the program is. A stopped fit then
    writes ``last.ckpt`` next to the other checkpoints (atomically, by the run's checkpoint writer). A stop
    during validation saves the state "training epoch done, validation not started": Lightning cannot resume a
    validation halfway (the metrics of the batches already seen are not in a checkpoint), so the resumed run
    validates that epoch again from its first batch. Lightning's prediction loop does not look for the stop
    request: here it is looked for after every prediction batch.

    Under DDP the processes must stop after the same batch (a process that stops alone leaves the others
    waiting for it in their next collective), whichever of them got the signal, and at whatever moment: at the
    end of every batch they agree (`agreed_stop`), and all stop if any was asked to.

    After the stop, `saved` names the checkpoint written (None if none).
    """

    def __init__(self) -> None:
        self.saved: Optional[Path] = None
        self._trainer: Optional[Trainer] = None
        self._in_loop = False
        self._saving_mid_validation = False

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.saved, self._trainer, self._in_loop = None, trainer, False

    def on_stop_request(self) -> bool:
        """A signal arrived while the trainer runs: True if the trainer will stop after its current batch."""
        if not self._in_loop or self._trainer is None:
            return False
        if self._trainer.world_size == 1:  # under DDP, the processes agree at the end of the batch
            request_stop_after_batch(self._trainer)
        return True

    def _loop_starts(self, trainer: Trainer) -> None:
        self._in_loop = True
        stop_requests.take_back()  # Lightning has just put its own handler on SIGTERM
        if stop_requests.requested() is not None and trainer.world_size == 1:  # asked for while setting up
            request_stop_after_batch(trainer)

    def _agree(self, trainer: Trainer) -> None:
        if trainer.world_size > 1 and agreed_stop(trainer) is not None:
            request_stop_after_batch(trainer)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._agree(trainer)

    def on_validation_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        self._agree(trainer)

    def on_test_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        self._agree(trainer)

    def on_sanity_check_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._loop_starts(trainer)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._loop_starts(trainer)

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._loop_starts(trainer)

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._loop_starts(trainer)

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._loop_starts(trainer)

    def on_predict_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                             batch_idx: int, dataloader_idx: int = 0) -> None:
        if trainer.received_sigterm:
            raise SIGTERMException

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._in_loop = False
        if not isinstance(exception, SIGTERMException):
            return
        checkpoint_callback = trainer.checkpoint_callback
        if (trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking or checkpoint_callback is None
                or checkpoint_callback.dirpath is None):
            return
        path = Path(checkpoint_callback.dirpath) / f"{checkpoint_callback.CHECKPOINT_NAME_LAST}.ckpt"
        # The callback's own last checkpoint from now on (saved in the checkpoint's callback state): a run resumed in
        # this folder (a requeued job) overwrites it, where Lightning would write last-v1.ckpt beside a stranger's.
        checkpoint_callback.last_model_path = str(path)
        self._saving_mid_validation = trainer.state.stage == RunningStage.VALIDATING
        try:
            trainer.save_checkpoint(path, weights_only=False)
        finally:
            self._saving_mid_validation = False
        self.saved = path

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        if self._saving_mid_validation:  # only the checkpoint of the stop, not ModelCheckpoint's own
            _validation_not_started(checkpoint)


def agreed_stop(trainer: Trainer) -> Optional[stop_requests.Request]:
    """The stop asked for on any process of the run, the same on every process (which must all call this at the
    same point: it is a collective under DDP); this process's own request with one process. A notice before
    preemption (`stop_requests.NOTICES`: the job is then requeued) outweighs a plain stop."""
    request = stop_requests.requested()
    if trainer.world_size == 1:
        return request
    code = 0 if request is None else request.signum + (_NOTICE if request.signum in stop_requests.NOTICES else 0)
    agreed = int(trainer.strategy.reduce(torch.tensor(code, device=trainer.strategy.root_device), reduce_op="max"))
    if agreed == 0:
        return None
    return stop_requests.adopt(agreed - _NOTICE if agreed > _NOTICE else agreed)


_NOTICE = 64  # above every signal number: a notice wins the agreement


def _validation_not_started(checkpoint: dict[str, Any]) -> None:
    """Make a checkpoint taken halfway through the epoch's validation resume at that validation's start.

    Lightning reruns a validation it finds "started, no batch processed" (its restart stage "mid
    evaluation") from the first batch; counts of batches already validated would make it skip them instead.
    """
    progress = checkpoint["loops"]["fit_loop"][VAL_PROGRESS]
    for counts in (progress["total"], progress["current"]):
        counts.update(ready=1, started=1, processed=0, completed=0)
    progress["is_last_batch"] = False


def stop_report(trainer: Trainer, subcommand: str, stop: BaseException, then: Optional[str] = None) -> Stopped:
    """What a stop by Ctrl-C or SIGTERM did, as the message `digitlab` prints (exit code 130 or 143).

    `stop` is what ended the run: Lightning's `SIGTERMException` (the trainer stopped after its batch), or a
    `StopSignal` (the stop happened where the program was: before the trainer's first loop, after its last, or at
    once on a second signal). `then`: what follows the stop (a SLURM job's requeue), instead of how to resume."""
    request = stop_requests.requested()
    name, exit_code = (request.name, request.exit_code) if request is not None else ("SIGTERM", 143)
    callback = next((c for c in trainer.callbacks if isinstance(c, SaveOnInterrupt)), None)
    saved = callback.saved if callback is not None else None
    at_once = isinstance(stop, StopSignal) and stop.at_once
    finished = trainer.state.status == TrainerStatus.FINISHED
    step = f"epoch {trainer.current_epoch}, step {trainer.global_step}"
    if saved is not None:
        what = f"at {step}; saved {saved}. {then}" if then else f"at {step}; saved {saved}: {resume_hint()}."
    elif finished and (subcommand != "fit" or trainer.state.fn == TrainerFn.TESTING):
        what = f"after `{subcommand}` had finished: everything it reported is saved."
    elif subcommand == "fit" and trainer.state.fn == TrainerFn.TESTING:
        what = ("during the test after fit. Training had finished and its checkpoints are in place: "
                "`digitlab test --ckpt_path ...` tests one again.")
    elif subcommand == "fit" and finished:
        what = (f"after training had finished ({step}); its checkpoints are in place. The test after fit did not "
                "run: `digitlab test --ckpt_path ...` runs it.")
    elif subcommand == "fit" and trainer.global_step > 0:
        last = _last_checkpoint(trainer)
        what = (f"{'at once, by a second signal, ' if at_once else ''}at {step}; nothing was saved at the stop. "
                + (f"The newest checkpoint is {last}: {resume_hint()}." if last else
                   "No checkpoint had been saved yet."))
    else:
        what = ("before training started: no checkpoint was saved." if subcommand == "fit" else
                "during `predict`: no predictions were written. Run it again." if subcommand == "predict" else
                f"during `{subcommand}`, which saves no checkpoint: run it again.")
        return Stopped(f"by {name} {_followed(what, then, saved)}", exit_code=exit_code, nothing_done=True)
    return Stopped(f"by {name} {_followed(what, then, saved)}", exit_code=exit_code)


def _followed(what: str, then: Optional[str], saved: Optional[Path]) -> str:
    return f"{what} {then}" if then and saved is None else what  # with a checkpoint saved, `then` is said already


def _last_checkpoint(trainer: Trainer) -> Optional[str]:
    callback = trainer.checkpoint_callback
    path = getattr(callback, "last_model_path", "") or getattr(callback, "best_model_path", "")
    return path or None
