"""Every private name of another package that digitlab uses, and the one small function (or class) using it.

A private name can change in any release. `PRIVATE_NAMES` lists each one with the reason it is used and the
public alternative, if any; tests/test_compat.py checks that each still exists in the installed versions and
that this module touches no private name it does not list. Nothing else in digitlab touches a private name of
another package.

Imports stay inside the functions: `digitlab report` (which reads sweeps too) must start without Lightning.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
    from lightning.pytorch import Trainer
    from optuna.storages import BaseStorage
    from optuna.storages._heartbeat import BaseHeartbeatThread as TrialHeartbeat
    from torch import Tensor, nn


@dataclass(frozen=True)
class PrivateName:
    """One private name: `path` is looked up attribute by attribute from `module`; a step ending in ``()`` is
    called with no argument first (for attributes that only instances have). `parameters` are those of the
    callable digitlab overrides or calls, when their names matter."""

    distribution: str
    module: str
    path: str
    reason: str
    public_alternative: str = "none"
    parameters: tuple[str, ...] = ()


PRIVATE_NAMES = (
    PrivateName("lightning", "lightning.pytorch.callbacks", "ModelCheckpoint._save_last_checkpoint",
                "overridden to choose when last.ckpt is written (after every epoch)",
                parameters=("self", "trainer", "monitor_candidates")),
    PrivateName("lightning", "lightning.pytorch.callbacks", "ModelCheckpoint._monitor_candidates",
                "the metrics Lightning names a checkpoint file with, for writing last.ckpt on demand",
                parameters=("self", "trainer")),
    PrivateName("lightning", "lightning.pytorch", "Trainer()._signal_connector.received_sigterm",
                "Ctrl-C stops after the batch, as SIGTERM does", "none: Trainer.received_sigterm is read-only"),
    PrivateName("lightning", "lightning.fabric.utilities.logger", "_flatten_dict",
                "hyperparameters shown in TensorBoard exactly as Lightning's TensorBoardLogger shows them",
                "TensorBoardLogger.log_hyperparams, which also logs a placeholder hp_metric",
                parameters=("params", "delimiter", "parent_key")),
    PrivateName("lightning", "lightning.pytorch.loggers", "TensorBoardLogger._sanitize_params",
                "hyperparameters shown in TensorBoard exactly as Lightning's TensorBoardLogger shows them",
                "TensorBoardLogger.log_hyperparams, which also logs a placeholder hp_metric",
                parameters=("params",)),
    PrivateName("torch", "torch.utils.tensorboard", "SummaryWriter._get_file_writer",
                "the HParams summary is written without a value, into the run's one event file",
                "SummaryWriter.add_hparams, which logs values into a new subfolder", parameters=("self",)),
    PrivateName("torch", "torch.nn", "Module._compiled_call_impl",
                "whether Module.compile() already ran on this model (configure_model runs once per stage)"),
    PrivateName("jsonargparse", "jsonargparse", "ArgumentParser()._actions",
                "every option of a parser, for 'did you mean' (argparse's own list)",
                "none: ArgumentParser.get_defaults() lists the keys but also validates the defaults"),
    PrivateName("optuna", "optuna.storages._heartbeat", "get_heartbeat_thread",
                "a claimed trial sends heartbeats as in Study.optimize, which cannot ask before claiming",
                "Study.optimize", parameters=("trial_id", "storage")),
    PrivateName("optuna", "optuna.storages._heartbeat", "BaseHeartbeatThread",
                "the type of what get_heartbeat_thread returns (started, then joined once the trial is told)",
                "Study.optimize"),
)


class LastCheckpointOnDemand:
    """A mixin for Lightning's `ModelCheckpoint` (put it first among the bases): Lightning's own writes of
    ``last.ckpt`` can be held back, and ``last.ckpt`` is written when asked."""

    holding_last = False

    # Private: Lightning has no public say over when last.ckpt is written (public alternative: none).
    def _save_last_checkpoint(self, trainer: Trainer, monitor_candidates: dict[str, Tensor]) -> None:
        if not self.holding_last:
            super()._save_last_checkpoint(trainer, monitor_candidates)

    @contextmanager
    def last_held_back(self) -> Iterator[None]:
        """Lightning's own hooks write no ``last.ckpt`` inside this block."""
        self.holding_last = True
        try:
            yield
        finally:
            self.holding_last = False

    def save_last_now(self, trainer: Trainer) -> None:
        # Private: Lightning's own last.ckpt writer, with the metrics it names files with (public: none).
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


def request_stop_after_batch(trainer: Trainer) -> None:
    """Make the trainer stop after its current batch, raising `SIGTERMException` as on SIGTERM."""
    # Private: the flag Lightning's SIGTERM handler sets; Trainer.received_sigterm is read-only.
    trainer._signal_connector.received_sigterm = True


def flatten_hparams(params: dict[str, Any]) -> dict[str, Any]:
    """Nested hyperparameters as ``a/b`` keys, as Lightning's TensorBoardLogger flattens them."""
    from lightning.fabric.utilities.logger import _flatten_dict  # Private: Lightning's own flattening.

    return _flatten_dict(params)


def sanitize_hparams(params: dict[str, Any]) -> dict[str, Any]:
    """Hyperparameter values TensorBoard can show (others as strings), as Lightning's TensorBoardLogger."""
    from lightning.pytorch.loggers import TensorBoardLogger

    return TensorBoardLogger._sanitize_params(params)  # Private: Lightning's own conversion.


def summary_file_writer(experiment: Any) -> Any:
    """The event file writer of a `SummaryWriter`, reopened if the writer was closed."""
    # Private: SummaryWriter has no public way to add a raw Summary (its `file_writer` is None once closed).
    return experiment._get_file_writer()


def is_compiled(module: nn.Module) -> bool:
    """Whether `Module.compile()` (in place) already ran on `module`."""
    return module._compiled_call_impl is not None  # Private: torch has no public "is compiled" query.


def parser_actions(parser: Any) -> list[Any]:
    """Every option of an (argparse or jsonargparse) parser, nested ones as dotted destinations."""
    return parser._actions  # Private: argparse keeps no public list of a parser's options.


def start_heartbeat(trial_id: int, storage: BaseStorage) -> TrialHeartbeat:
    """Optuna's heartbeat thread for a trial, started: `join()` it once the trial is told."""
    from optuna.storages._heartbeat import get_heartbeat_thread  # Private: Study.optimize's own heartbeat.

    heartbeat = get_heartbeat_thread(trial_id, storage)
    heartbeat.start()
    return heartbeat
