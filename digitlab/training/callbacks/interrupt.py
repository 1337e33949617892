"""Ctrl-C and SIGTERM stop a run after the current batch; a fit saves `last.ckpt` first, so that it resumes."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any, Optional

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.trainer.states import RunningStage, TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from digitlab.errors import Stopped
from digitlab.training.compat import request_stop_after_batch

VAL_PROGRESS = "epoch_loop.val_loop.batch_progress"


class SaveOnInterrupt(Callback):
    """Stop cleanly on Ctrl-C (SIGINT) or SIGTERM, and make the stopped fit resumable with ``--ckpt_path last``.

    Lightning finishes the current batch on SIGTERM; Ctrl-C is made to do the same (Python would otherwise
    raise KeyboardInterrupt wherever it is, perhaps halfway through an optimizer step). A second Ctrl-C
    stops at once, saving nothing. While fitting, ``last.ckpt`` is then written next to the other
    checkpoints (atomically, by the run's checkpoint writer). A stop during validation saves the state
    "training epoch done, validation not started": Lightning cannot resume a validation halfway (the
    metrics of the batches already seen are not in a checkpoint), so the resumed run validates that epoch
    again from its first batch.

    After the stop, `signal_name` names the signal and `saved` the checkpoint written (None if none).
    """

    def __init__(self) -> None:
        self.signal_name: Optional[str] = None
        self.saved: Optional[Path] = None
        self._previous_handler: Any = None
        self._saving_mid_validation = False

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.signal_name, self.saved = None, None
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set in the main thread

        def stop_after_this_batch(signum: int, frame: Any) -> None:
            if self.signal_name is not None:  # the second Ctrl-C: stop now
                signal.signal(signal.SIGINT, signal.default_int_handler)
                raise KeyboardInterrupt
            self.signal_name = "Ctrl-C (SIGINT)"
            request_stop_after_batch(trainer)

        self._previous_handler = signal.signal(signal.SIGINT, stop_after_this_batch)

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self._previous_handler is not None:
            signal.signal(signal.SIGINT, self._previous_handler)
            self._previous_handler = None

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException):
            return
        self.signal_name = self.signal_name or "SIGTERM"
        checkpoint_callback = trainer.checkpoint_callback
        if (trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking or checkpoint_callback is None
                or checkpoint_callback.dirpath is None):
            return
        path = Path(checkpoint_callback.dirpath) / f"{checkpoint_callback.CHECKPOINT_NAME_LAST}.ckpt"
        self._saving_mid_validation = trainer.state.stage == RunningStage.VALIDATING
        try:
            trainer.save_checkpoint(path, weights_only=False)
        finally:
            self._saving_mid_validation = False
        self.saved = path

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        if self._saving_mid_validation:  # only the checkpoint of the stop, not ModelCheckpoint's own
            _validation_not_started(checkpoint)


def _validation_not_started(checkpoint: dict[str, Any]) -> None:
    """Make a checkpoint taken halfway through the epoch's validation resume at that validation's start.

    Lightning reruns a validation it finds "started, no batch processed" (its restart stage "mid
    evaluation") from the first batch; counts of batches already validated would make it skip them instead.
    """
    progress = checkpoint["loops"]["fit_loop"][VAL_PROGRESS]
    for counts in (progress["total"], progress["current"]):
        counts.update(ready=1, started=1, processed=0, completed=0)
    progress["is_last_batch"] = False


def stop_report(trainer: Trainer, subcommand: str) -> Stopped:
    """What a SIGINT/SIGTERM stop did, as the message `digitlab` prints (exit code 130 or 143)."""
    stop = next((c for c in trainer.callbacks if isinstance(c, SaveOnInterrupt)), None)
    signal_name = (stop.signal_name if stop else None) or "SIGTERM"
    if stop is not None and stop.saved is not None:
        what = (f"at epoch {trainer.current_epoch}, step {trainer.global_step}; saved {stop.saved}. Resume with "
                "`digitlab fit --config ... --ckpt_path last`.")
    elif trainer.state.fn == TrainerFn.TESTING and subcommand == "fit":
        what = ("during the test after fit. Training had finished and its checkpoints are in place: "
                "`digitlab test --ckpt_path ...` tests one again.")
    elif subcommand == "fit":
        what = "before training started (or with no checkpoint callback): no checkpoint was saved."
    else:
        what = f"during `{subcommand}`, which saves no checkpoint: run it again."
    return Stopped(f"by {signal_name} {what}", exit_code=130 if signal_name.startswith("Ctrl-C") else 143)
