"""Save `last.ckpt` when a run is stopped with Ctrl-C or SIGTERM, so that it can be resumed."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException


class SaveOnInterrupt(Callback):
    """On Ctrl-C (KeyboardInterrupt) or SIGTERM during fit, write ``last.ckpt`` next to the other checkpoints.

    Lightning stops after the current batch and calls this hook; the checkpoint is written atomically
    (a temporary file, then a rename), so a second interruption cannot leave a corrupt ``last.ckpt``.
    Resume with ``digitlab fit --config ... --ckpt_path last``.
    """

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, (KeyboardInterrupt, SIGTERMException)) or trainer.state.fn != TrainerFn.FITTING:
            return
        checkpoint = trainer.checkpoint_callback
        if checkpoint is None or checkpoint.dirpath is None or trainer.sanity_checking:
            return
        path = Path(checkpoint.dirpath) / f"{checkpoint.CHECKPOINT_NAME_LAST}{checkpoint.FILE_EXTENSION}"
        trainer.save_checkpoint(path)
        rank_zero_info(
            f"Interrupted at epoch {trainer.current_epoch}, step {trainer.global_step}: saved {path}. "
            "Resume with `--ckpt_path last`."
        )
