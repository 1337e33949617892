"""The one run path: every command that trains or evaluates builds its run here, then runs it.

    from digitlab.training.run import build_run, parse_run

    run = build_run(parse_run("fit", ["--config", "configs/lenet5.yaml"]))  # model, data, trainer, run folder
    run.execute()  # trainer.fit, then the test after fit

`digitlab fit|validate|test|predict` (`main`), every sweep trial, and any script or test that needs a run
call these. `parse_run` is LightningCLI's parsing (`digitlab.training.lightning_cli`); `build_run` makes the
model, the data module and the trainer with digitlab's loggers, callbacks, checkpoint writer, checks and
seed; `Run.execute` runs the subcommand and turns Lightning's refusals and signals into one-paragraph errors.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from jsonargparse import Namespace
from lightning.fabric.plugins import CheckpointIO
from lightning.pytorch import Callback, LightningDataModule, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint as LightningModelCheckpoint
from lightning.pytorch.callbacks import ModelSummary as LightningModelSummary
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from digitlab.errors import RunNotWritten, StopSignal, Stopped, UserError
from digitlab.models import DigitModel
from digitlab.models.registry import model_entries
from digitlab.runs import checkpoints, layout, ownership
from digitlab.runs.layout import logger_specs, writes_run_folder
from digitlab.runs.folders import (claim_fixed_version, claim_run_folder, discard_unstarted, earlier_run,
                                   release_if_empty, unwritable)
from digitlab.runs.restarts import restarted
from digitlab.training.callbacks import ModelCheckpoint, default_callbacks, picture_callbacks
from digitlab.training.callbacks.idle_hooks import skip_idle_batch_hooks
from digitlab.training.callbacks.interrupt import SaveOnInterrupt, agreed_stop, stop_report
from digitlab.training.callbacks.terminal import LayersSummary, progress_display
from digitlab.training.checkpoint_io import AtomicCheckpointIO
from digitlab.training.elastic import end_process_group, init_process_group_of_this_attempt, peer_lost
from digitlab.training.final_lines import STAGES, evaluation_lines, where_lines
from digitlab.training.checks import (CONSTRUCTION_ERRORS, LIGHTNING_ERRORS, check_trainer, lightning_refusal,
                                      model_too_large, warn_if_untrained)
from digitlab.training.lightning_cli import DigitLabCLI
from digitlab.training.loggers import build_loggers
from digitlab.training.requeue import requeue_job, requeue_signal
from digitlab.utils import stop_requests
from digitlab.utils.destination import NO_ROOM, NOT_WRITABLE

PROGRESS_BAR_REFRESH_RATE = 20  # batches between redraws of the progress bar


@dataclass
class ParsedRun:
    """A subcommand and its parsed, checked config (`parse_run`); `cli` is the parser that made it."""

    subcommand: str
    cli: DigitLabCLI

    @property
    def config(self) -> Namespace:
        return self.cli.config


def parse_run(subcommand: str, args: Sequence[str]) -> ParsedRun:
    """Parse `digitlab SUBCOMMAND ARGS` (fit, validate, test or predict): user mistakes raise `UserError`."""
    return ParsedRun(subcommand, DigitLabCLI(subcommand, list(args)))


@dataclass
class Run:
    """A built run: what `build_run` made, ready to `execute`."""

    subcommand: str
    config: Namespace
    model: DigitModel
    datamodule: LightningDataModule
    trainer: Trainer
    folder: Optional[Path]  # the run folder (version_N, test_K, trial_N), None without a file logger
    claimed_folder: Optional[Path]  # `folder` if `build_run` claimed it: removed again if the run is refused
    method_kwargs: dict[str, Any] = field(default_factory=dict)  # Trainer.<subcommand>'s options (ckpt_path ...)
    checkpoint: Optional[dict[str, Any]] = None  # --ckpt_path's content, until checked against the model
    fixed_folders: list[Path] = field(default_factory=list)  # explicit versions' folders, claimed by `build_run`
    quiet: bool = False  # Lightning's informational lines and the final lines unsaid: the caller reports the run
    requeue_on: Optional[int] = None  # the signal on which a SLURM job asks to be requeued (`requeue_signal`)

    def execute(self) -> None:
        """Run the subcommand (for fit, then the test after fit), printing the test accuracy.

        Ctrl-C and SIGTERM stop the run (a fit after its batch, saving `last.ckpt`) and raise `Stopped`; so does
        SLURM's notice before preemption, after which the job asks to be requeued; a setting Lightning refuses
        before training starts raises `UserError`; a refused run leaves no run folder behind."""
        try:
            self._execute()
        finally:  # the run folder is free for a requeued or restarted job of the same run
            for folder in (self.folder, *self.fixed_folders):
                ownership.release(folder)

    def _execute(self) -> None:
        with CleanupOnFailure(self.claimed_folder, self.fixed_folders), _writer_thread_faults_reported_here(), \
                (_lightning_info_hidden() if self.quiet else contextlib.nullcontext()):
            if self.checkpoint is not None:
                checkpoints.check_fits(self.method_kwargs.get("ckpt_path"), self.checkpoint, self.model)
                if self.subcommand != "fit":  # an evaluation of NaN weights would report a meaningless score
                    checkpoints.check_finite(self.method_kwargs.get("ckpt_path"), self.checkpoint["state_dict"])
                self.checkpoint = None  # Lightning reads the file again itself: do not hold two copies
            warn_if_untrained(self.trainer, self.subcommand, self.method_kwargs.get("ckpt_path"))
            try:
                self._call(self.subcommand, **self.method_kwargs)
                self._stop_if_asked()  # a signal after the trainer's last batch
                if self.subcommand == "fit" and self.config.get("test_after_fit") and not self.trainer.interrupted:
                    best = self.trainer.checkpoint_callback
                    self._call("test", ckpt_path="best" if best is not None and best.best_model_path else None)
                if self.trainer.is_global_zero and not self.quiet:
                    self._print_results()
                self._stop_if_asked()
            except (SIGTERMException, StopSignal) as stop:
                raise stop_report(self.trainer, self.subcommand, stop, self._requeue()) from None

    def _requeue(self) -> Optional[str]:
        """After a stop: SLURM's notice asks for the requeue (global rank 0 asks); what happened, as a sentence."""
        request = stop_requests.requested()
        if request is None or request.signum != self.requeue_on:
            return None
        return requeue_job() if self.trainer.is_global_zero else "Global rank 0 asks SLURM to requeue the job."

    def _stop_if_asked(self) -> None:
        """Stop here if a stop was asked for, on this process or (under DDP) on any other: every process of the
        run stops at the same point."""
        if agreed_stop(self.trainer) is not None:
            stop_requests.raise_if_requested()

    def _print_results(self) -> None:
        metrics = self.trainer.callback_metrics
        evaluated = "validate" if self.subcommand == "validate" else "test"
        for line in evaluation_lines(metrics, evaluated, self.trainer) + where_lines(self.folder, self.subcommand):
            print(line)

    def _call(self, method: str, **kwargs: Any) -> None:
        if method in STAGES:  # its accuracy and where it is are printed by `_print_results`, not Lightning's table
            kwargs["verbose"] = False
        stop = next((c for c in self.trainer.callbacks if isinstance(c, SaveOnInterrupt)), None)
        init_process_group_of_this_attempt(self.trainer)
        try:
            with stop_requests.handled(), stop_requests.graceful(stop.on_stop_request if stop else _not_graceful):
                getattr(self.trainer, method)(self.model, datamodule=self.datamodule, **kwargs)
        except OSError as error:  # a full or read-only disk under the run folder (its logs, config.yaml)
            refusal = self._storage_fault(error)
            if refusal is None:
                raise
            raise refusal from None
        except LIGHTNING_ERRORS as error:
            refusal = lightning_refusal(error, self.subcommand) if self.trainer.global_step == 0 else None
            if refusal is None:  # not a setting Lightning refused before training began: a bug, with its traceback
                raise
            raise refusal from None
        except RuntimeError as error:  # under DDP: another process of the run is gone
            lost = peer_lost(error, self.trainer)
            if lost is None:
                raise
            raise lost from None

    def _storage_fault(self, error: OSError) -> Optional[UserError]:
        """`error` as `unwritable`'s paragraph when the place is at fault: a full disk (wherever the run writes),
        or a read-only file system or folder under the run folder; None otherwise (a bug)."""
        folder = self.folder or Path(self.trainer.default_root_dir)
        named = Path(error.filename).resolve() if isinstance(error.filename, str) else None
        if error.errno in NOT_WRITABLE and named is not None and folder.resolve() not in (named, *named.parents):
            return None  # some other file: not the run folder's fault
        return unwritable(error, folder, started=self.trainer.global_step > 0)


def _not_graceful() -> bool:
    return False


def build_run(
    parsed: ParsedRun,
    *,
    callbacks: Sequence[Callback] = (),
    folder: Optional[Path] = None,
    extra_hparams: Optional[dict[str, Any]] = None,
    extra_metrics: tuple[str, ...] = (),
    quiet: bool = False,
) -> Run:
    """Build the run `parsed` describes: seed, model, data module, and a trainer with digitlab's loggers (into
    a newly claimed run folder), callbacks, atomic checkpoint writer and checks.

    Args:
        parsed: What `parse_run` gave.
        callbacks: More callbacks for this run only (not in its config.yaml), e.g. a sweep's pruning.
        folder: A run folder the caller has already claimed (a sweep's ``trial_N``), instead of a new one.
        extra_hparams: More hyperparameters to log (a sweep's name and trial number).
        extra_metrics: More metric names for TensorBoard's HParams tab.
        quiet: For a caller that reports the run in its own words (a sweep's line per trial): no progress bar,
            model summary, Lightning information lines or final lines; warnings and errors still show. The
            run's config.yaml is the config as parsed (a replay of it shows all of that again).
    """
    config, subcommand = parsed.config, parsed.subcommand
    with CleanupOnFailure() as cleanup:
        if config.get("seed_everything") is not False:  # again: parsing seeded, and a caller may have drawn since
            seed_everything(config.seed_everything, workers=True, verbose=False)
        try:
            instantiated = parsed.cli.parser.instantiate_classes(config)
        except Exception as error:
            raise model_too_large(error, model_name(config.model), config.model) or error
        model, datamodule = instantiated.model, instantiated.data
        trainer_kwargs = {**instantiated.trainer}
        if subcommand == "predict":  # it logs nothing (its output is the table and --predictions.csv): no run folder
            trainer_kwargs["logger"] = False
        elif not trainer_kwargs.get("fast_dev_run"):
            specs = logger_specs(config.trainer.get("logger"), str(config.trainer.get("default_root_dir") or "."))
            for spec in specs:  # explicit versions: claimed before any logger writes, as a new version_N is
                cleanup.claim_fixed(spec)
            if folder is None and any(writes_run_folder(spec) for spec in specs):
                folder = cleanup.claim(subcommand, config)
            shown = _shown_settings(config, model) if subcommand == "fit" else {}
            trainer_kwargs["logger"] = build_loggers(specs, folder, model_name(config.model),
                                                     {**shown, **(extra_hparams or {})}, extra_metrics,
                                                     tuple(model.hparams)) if specs else False
        trainer_kwargs["plugins"] = _with_atomic_checkpoints(trainer_kwargs.get("plugins"))
        trainer_kwargs["callbacks"] = _run_callbacks(
            parsed, trainer_kwargs.get("callbacks"), [instantiated[key] for key in parsed.cli.parser.callback_keys],
            list(callbacks), quiet)
        if quiet:
            trainer_kwargs["enable_model_summary"] = False
            if not _has(trainer_kwargs["callbacks"], ProgressBar):  # a bar configured by hand is the user's choice
                trainer_kwargs["enable_progress_bar"] = False
        try:
            trainer = Trainer(**trainer_kwargs)
        except CONSTRUCTION_ERRORS as error:
            raise lightning_refusal(error, subcommand) or error
        check_trainer(trainer, datamodule.hparams.get("val_split"))
        _refuse_existing_run_folder(trainer, subcommand)
        skip_idle_batch_hooks(trainer.callbacks)
    method_kwargs = {key: config.get(key) for key in parsed.cli.method_arguments}
    return Run(subcommand, config, model, datamodule, trainer, folder, cleanup.folder, method_kwargs,
               parsed.cli.checkpoint, cleanup.fixed, quiet, requeue_signal(trainer_kwargs["plugins"]))


def _shown_settings(config: Namespace, model: DigitModel) -> dict[str, Any]:
    """What TensorBoard's HParams tab shows of a fit beyond the model's hyperparameters: its epochs, and the
    optimizer and learning rate of a model that builds its optimizer itself (and so does not keep them)."""
    shown: dict[str, Any] = {"epochs": config.trainer.get("max_epochs")}
    optimizer = (config.model.get("init_args") or {}).get("optimizer") if hasattr(config.model, "get") else None
    if "optimizer" not in model.hparams and hasattr(optimizer, "get") and optimizer.get("class_path"):
        shown["optimizer"] = str(optimizer.get("class_path")).rsplit(".", 1)[-1]
        lr = (optimizer.get("init_args") or {}).get("lr")
        if lr is not None and "lr" not in model.hparams:
            shown["lr"] = lr
    return shown


class SaveConfigToRunFolder(SaveConfigCallback):
    """LightningCLI's config.yaml, written only into a run folder: a run without a logger has none (Lightning
    would write it into the working folder, and refuse the next such run)."""

    def setup(self, trainer: Trainer, pl_module: Any, stage: str) -> None:
        if restarted() and trainer.log_dir and (Path(trainer.log_dir) / self.config_filename).is_file():
            return  # a requeued or restarted job keeps the config its first start wrote (Lightning would refuse)
        if trainer.loggers:
            super().setup(trainer, pl_module, stage)


def _run_callbacks(parsed: ParsedRun, configured: Any, options: list[Callback], extra: list[Callback],
                   quiet: bool = False) -> list[Callback]:
    """The config's callbacks and options' (`--predictions`), digitlab's own, the caller's (`extra`), then
    config.yaml's writer."""
    config = parsed.config
    callbacks = [] if configured is None else list(configured) if isinstance(configured, list) else [configured]
    callbacks += options
    callbacks += default_callbacks()
    if parsed.subcommand != "predict" and config.get("pictures"):
        callbacks += picture_callbacks()
    if config.trainer.get("enable_progress_bar") is not False and not quiet and not _has(callbacks, ProgressBar):
        # Lightning's bar redraws after every batch by default, which costs more than a small model's step.
        callbacks.append(progress_display(PROGRESS_BAR_REFRESH_RATE))
    if config.trainer.get("enable_model_summary") is not False and not quiet and \
            not _has(callbacks, LightningModelSummary):
        callbacks.append(LayersSummary())
    if config.trainer.get("enable_checkpointing") is not False and not _has(callbacks, LightningModelCheckpoint):
        # Instead of Lightning's default (the newest epoch's weights): last.ckpt after every epoch.
        callbacks.append(ModelCheckpoint(save_top_k=0, save_last=True))
    _checkpoint_every(callbacks, config.get("last_checkpoint_every_n_steps") or 0, parsed.subcommand)
    callbacks += extra
    if not config.trainer.get("fast_dev_run"):
        callbacks.append(SaveConfigToRunFolder(parsed.cli.parser, config, config_filename=layout.RUN_CONFIG))
    return callbacks


def _checkpoint_every(callbacks: list[Callback], steps: int, subcommand: str) -> None:
    """``--last_checkpoint_every_n_steps``: every digitlab `ModelCheckpoint` that writes last.ckpt writes it every
    `steps` training steps too."""
    if not steps or subcommand != "fit":
        return
    writers = [c for c in callbacks if isinstance(c, ModelCheckpoint) and c.save_last]
    if not writers:
        raise UserError(f"--last_checkpoint_every_n_steps {steps} writes last.ckpt every {steps} steps, but this run "
                        "writes no last.ckpt: checkpointing is off, or its ModelCheckpoint is not digitlab's "
                        "(digitlab.training.callbacks.ModelCheckpoint) with save_last: true. Add one, or leave the "
                        "option out.")
    for writer in writers:
        writer.last_every_n_steps = steps


def _has(callbacks: list[Callback], kind: type) -> bool:
    return any(isinstance(callback, kind) for callback in callbacks)


def model_name(model_config: Any) -> Optional[str]:
    """The registry name of the configured model (its class name if it is not registered)."""
    class_path = model_config.get("class_path") if hasattr(model_config, "get") else None
    if not class_path:
        return None
    names = {entry.class_path: entry.name for entry in model_entries()}
    return names.get(class_path, class_path.rsplit(".", 1)[-1])


def _with_atomic_checkpoints(plugins: Any) -> list[Any]:
    """The configured trainer plugins, with `AtomicCheckpointIO` unless one of them writes checkpoints."""
    plugins = [] if plugins is None else list(plugins) if isinstance(plugins, list) else [plugins]
    if not any(isinstance(plugin, CheckpointIO) for plugin in plugins):
        plugins.append(AtomicCheckpointIO())
    return plugins


def _refuse_existing_run_folder(trainer: Trainer, subcommand: str) -> None:
    if restarted() or rank_zero_only.rank != 0:  # other processes only know the folder's name, or none yet
        return
    if trainer.loggers:
        # digitlab claims a new folder by default; an explicitly chosen version must not be reused.
        log_dir = trainer.log_dir
        if log_dir and _holds_files(Path(log_dir)):
            raise earlier_run(log_dir)
    elif subcommand == "fit":
        # Without a logger there is no run folder: checkpoints go to default_root_dir/checkpoints, where
        # an earlier run's best and last checkpoints would be overwritten.
        for callback in trainer.checkpoint_callbacks:
            folder = Path(callback.dirpath or Path(trainer.default_root_dir) / layout.CHECKPOINTS)
            if _holds_files(folder):
                raise UserError(
                    f"{folder} already holds checkpoints of an earlier run, and digitlab never overwrites "
                    "a checkpoint. Give this run its own folder with --trainer.default_root_dir DIR."
                )


def _holds_files(folder: Path) -> bool:
    return folder.is_dir() and any(path.name not in layout.OWN_MARKERS for path in folder.iterdir())


class CleanupOnFailure:
    """On the way out of a failure: a run folder claimed here that holds nothing is removed, and one refused by
    a user mistake or stopped by a signal before anything was trained is discarded (it holds only what every run
    writes first)."""

    def __init__(self, folder: Optional[Path] = None, fixed: Sequence[Path] = ()) -> None:
        self.folder = folder
        self.fixed = list(fixed)  # the folders of loggers with an explicit version, claimed here

    def claim_fixed(self, spec: dict[str, Any]) -> None:
        folder = claim_fixed_version(spec, continues=restarted(), claimed=self.fixed)
        if folder is not None and folder not in self.fixed:  # a TensorBoard and a CSV logger may share one
            self.fixed.append(folder)

    def claim(self, subcommand: str, config: Namespace) -> Path:
        self.folder = claim_run_folder(subcommand, layout.logs_root(config.trainer), config.get("ckpt_path"))
        return self.folder

    def __enter__(self) -> "CleanupOnFailure":
        return self

    def __exit__(self, kind: Any, error: Any, traceback: Any) -> None:
        if error is None:
            return
        refused = isinstance(error, RunNotWritten) or (isinstance(error, UserError) and error.exit_code == 2)
        stopped_early = isinstance(error, StopSignal) or (isinstance(error, Stopped) and error.nothing_done)
        for folder in (self.folder, *self.fixed):
            if refused or stopped_early:
                discard_unstarted(folder)
            release_if_empty(folder)  # lets go of the folder's lock too


@contextlib.contextmanager
def _writer_thread_faults_reported_here() -> Iterator[None]:
    """TensorBoard writes events in a thread of its own. On a full or read-only disk that thread prints its
    traceback and stops; TensorBoard then raises the same error in the run's thread at the logger's next write
    or flush, where `Run._call` says it in one paragraph. The thread's own traceback is left out."""
    previous = threading.excepthook

    def hook(args: Any) -> None:
        fault = isinstance(args.exc_value, OSError) and args.exc_value.errno in NO_ROOM | NOT_WRITABLE
        if not (fault and type(args.thread).__module__.startswith("tensorboard.")):
            previous(args)

    threading.excepthook = hook
    try:
        yield
    finally:
        threading.excepthook = previous


@contextlib.contextmanager
def _lightning_info_hidden() -> Iterator[None]:
    """Lightning's informational lines ("`Trainer.fit` stopped: `max_epochs=2` reached.") unsaid; its warnings
    and errors still show."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(max(logging.WARNING, logger.getEffectiveLevel()))
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def quiet_lightning_notices() -> None:
    """Drop what says nothing about the user's run: advertisements and internal deprecations."""
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")  # Lightning vs torch 2.14
    # Lightning's all_gather (the mistakes picture under DDP) vs torch 2.14:
    warnings.filterwarnings("ignore", message=r"torch\.distributed\.nn\.functional\.all_gather is deprecated")
    # Every epoch logs its training metrics anyway; a short epoch loses nothing:
    warnings.filterwarnings("ignore", message=r"The number of training batches \(\d+\) is smaller than the logging")
    # jsonargparse vs LightningCLI's own calls (nothing a user can change):
    warnings.filterwarnings("ignore", message=r"\s*skip_none parameter was deprecated")
    for name in ("lightning.pytorch", "lightning.fabric"):  # where Lightning's handlers are, when it adds them
        for handler in logging.getLogger(name).handlers:
            handler.addFilter(_worth_showing)
    for name in _NOISY_LOGGERS:  # where the records begin, whichever handlers show them
        if _worth_showing not in logging.getLogger(name).filters:
            logging.getLogger(name).addFilter(_worth_showing)


# Lightning's lines that say nothing about the user's run: advertisements, the seed (in config.yaml), hardware
# that is not there, and the end of the epochs asked for.
_NOISE = ("💡 Tip", "Seed set to ", "GPU available: False", "TPU available: False", "HPU available: False",
          "Trainer already configured with model summary callbacks", "`Trainer.fit` stopped: `max_epochs=",
          "Loaded model weights from the checkpoint at")  # the command's own "using" line names the checkpoint


_NOISY_LOGGERS = ("lightning.fabric.utilities.seed", "lightning.pytorch.utilities.rank_zero")


def _worth_showing(record: logging.LogRecord) -> bool:
    message = re.sub(r"^\[rank: \d+\] ", "", record.getMessage())  # other processes' copies of the same lines
    return not message.startswith(_NOISE) and "LitLogger" not in message


def main(args: Sequence[str]) -> None:
    """`digitlab fit|validate|test|predict ARGS`: `args` starts with the subcommand."""
    quiet_lightning_notices()
    try:
        build_run(parse_run(args[0], args[1:])).execute()
    finally:
        end_process_group()
