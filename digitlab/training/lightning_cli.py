"""`digitlab fit|validate|test|predict`: LightningCLI with registry names, test-after-fit, and clear user errors."""

from __future__ import annotations

import importlib
import logging
import os
import random
import sys
import warnings
from argparse import ArgumentError
from pathlib import Path
from typing import Any, Optional

from lightning.fabric.plugins import CheckpointIO
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from digitlab.runs import checkpoints
from digitlab.training.callbacks import ModelCheckpoint, PredictionWriter, default_callbacks, picture_callbacks
from digitlab.training.callbacks.idle_hooks import skip_idle_batch_hooks
from digitlab.training.callbacks.interrupt import stop_report
from digitlab.training.checkpoint_io import AtomicCheckpointIO
from digitlab.data import MNISTDataModule
from digitlab.errors import UserError
from digitlab.training.loggers import build_loggers, logger_specs, writes_run_folder
from digitlab.config.model_names import YAML_MODE, register_yaml_loader, rewrite_model_args
from digitlab.models import DigitModel
from digitlab.config.parse_errors import explain
from digitlab.models.registry import discover_models, model_entries
from digitlab.training.checks import (CONSTRUCTION_ERRORS, LIGHTNING_ERRORS, check_config, check_trainer, lightning_refusal,
                                 warn_if_untrained)
from digitlab.runs.folders import claim_run_folder, discard_unstarted, release_if_empty, with_run_config

PROGRESS_BAR_REFRESH_RATE = 20  # batches between redraws of the progress bar
EPILOG = (
    "Run `digitlab models` to list the models, `digitlab report` to compare the runs in lightning_logs, "
    "`digitlab SUBCOMMAND --help` for a subcommand's options."
)


class SaveConfigToRunFolder(SaveConfigCallback):
    """LightningCLI's config.yaml, written only into a run folder: a run without a logger has none (Lightning
    would write it into the working folder, and refuse the next such run)."""

    def setup(self, trainer: Trainer, pl_module: Any, stage: str) -> None:
        if trainer.loggers:
            super().setup(trainer, pl_module, stage)


class DigitLabCLI(LightningCLI):
    """`digitlab fit|validate|test|predict`, with models chosen by registry name, class name or class path."""

    def __init__(self, args: Optional[list[str]] = None, **kwargs: Any) -> None:
        discover_models()  # plugins must be imported before the parser lists DigitModel's subclasses
        register_yaml_loader()
        self.run_folder: Optional[Path] = None  # claimed when the trainer is made
        self.checkpoint: Optional[dict[str, Any]] = None  # --ckpt_path's content, until checked against the model
        try:
            super().__init__(
                DigitModel,
                MNISTDataModule,
                subclass_mode_model=True,
                # Each model owns its optimizer argument; a global --optimizer would silently override it.
                auto_configure_optimizers=False,
                trainer_defaults={"callbacks": default_callbacks()},
                save_config_callback=SaveConfigToRunFolder,
                args=args,
                **kwargs,
            )
        except BaseException as error:
            # A mistake refused before anything was trained leaves no run folder behind.
            if isinstance(error, UserError) and error.exit_code == 2:
                discard_unstarted(self.run_folder)
            release_if_empty(self.run_folder)
            raise

    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        kwargs.setdefault("parser_mode", YAML_MODE)
        kwargs.setdefault("epilog", EPILOG)
        kwargs.setdefault("exit_on_error", False)  # parse errors reach parse_arguments, which explains them
        return super().init_parser(**kwargs)

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        if args is not None and not isinstance(args, list):  # a dict or Namespace: no names to rewrite
            return super().parse_arguments(parser, args)
        args = with_run_config(rewrite_model_args(sys.argv[1:] if args is None else args))
        try:
            self.config = parser.parse_args(args)
        except (ArgumentError, UnicodeDecodeError) as error:  # the latter: a config file that is not text
            subcommand = next((a for a in args if a in self.subcommands()), None)
            sub_parser = self._subcommand_parsers.get(subcommand, parser)
            raise UserError(explain(error, sub_parser, subcommand, args)) from None

    def _parse_ckpt_path(self) -> None:
        # Instead of LightningCLI's, which reads a checkpoint's hyperparameters into the config unchecked (a
        # checkpoint could name a module to import, or silently swap the model): resolve `last`, read the
        # checkpoint once, refuse another model or foreign class paths, then merge what is left.
        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else None
        self.checkpoint = None
        if config is None:
            return
        config.ckpt_path = checkpoints.resolve(config.get("ckpt_path"), config.trainer)
        if not config.ckpt_path:
            return
        self.checkpoint = checkpoints.load(config.ckpt_path, config.get("weights_only"))
        checkpoints.check_restorable(config.ckpt_path, self.checkpoint)
        if subcommand == "fit" and "optimizer_states" not in self.checkpoint:
            raise UserError(
                f"--ckpt_path {config.ckpt_path} holds weights only (saved with save_weights_only), so training "
                "cannot resume from it. Use it with validate, test or predict, or resume from a full checkpoint."
            )
        model_class = _model_class(config.model)
        hyperparameters = checkpoints.model_hyperparameters(config.ckpt_path, self.checkpoint, model_class)
        if hyperparameters:
            try:
                self.config = self.parser.parse_object({subcommand: {"model": hyperparameters}}, self.config)
            except (ArgumentError, SystemExit) as error:
                raise UserError(f"--ckpt_path {config.ckpt_path}: its hyperparameters do not fit "
                                f"{model_class.__name__}: {str(error)[:500]}") from None

    def _before_run(self) -> None:
        ckpt_path = self.config[self.subcommand].get("ckpt_path")
        if self.checkpoint is not None:
            checkpoints.check_fits(ckpt_path, self.checkpoint, self.model)
            self.checkpoint = None  # Lightning reads the file again itself: do not hold two copies
        warn_if_untrained(self.trainer, self.subcommand, ckpt_path)

    before_fit = before_validate = before_test = before_predict = _before_run

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        # Without a subcommand (run=False, as the benchmarks build a run) the config is not nested.
        config, config_init = ((self.config[self.subcommand], self.config_init[self.subcommand]) if self.subcommand
                               else (self.config, self.config_init))
        if "logger" not in kwargs and not config.trainer.get("fast_dev_run"):
            kwargs["logger"] = self._run_loggers(config)
        kwargs.setdefault("plugins", _with_atomic_checkpoints(config_init.trainer.get("plugins")))
        try:
            trainer = super().instantiate_trainer(**kwargs)
        except CONSTRUCTION_ERRORS as error:
            raise lightning_refusal(error, self.subcommand) or error
        check_trainer(trainer, self.datamodule.hparams.get("val_split"))
        self._refuse_existing_run_folder(trainer)
        skip_idle_batch_hooks(trainer.callbacks)
        return trainer

    def _set_seed(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        check_config(config)
        if config.get("seed_everything") is True:
            # Lightning would seed 0 every time ("No seed found"): a random seed, written into config.yaml so
            # that the run replays. The other processes of a DDP run inherit rank 0's through PL_GLOBAL_SEED.
            inherited = os.environ.get("PL_GLOBAL_SEED") if rank_zero_only.rank != 0 else None
            config.seed_everything = int(inherited or random.SystemRandom().randrange(2**32))
        super()._set_seed()

    def _run_loggers(self, config: Any) -> Any:
        """The loggers, every file logger writing into the one run folder claimed for this run."""
        specs = logger_specs(config.trainer.get("logger"), str(config.trainer.get("default_root_dir") or "."))
        if not specs:
            return False
        if any(writes_run_folder(spec) for spec in specs):
            self.run_folder = claim_run_folder(self.subcommand, checkpoints.logs_root(config.trainer),
                                               config.get("ckpt_path"))
        return build_loggers(specs, self.run_folder, model_name(config.model))

    def _run_subcommand(self, subcommand: str) -> None:
        try:
            super()._run_subcommand(subcommand)
        except SIGTERMException:
            raise stop_report(self.trainer, subcommand) from None
        except LIGHTNING_ERRORS as error:
            refusal = lightning_refusal(error, subcommand) if self.trainer.global_step == 0 else None
            if refusal is None:  # not a setting Lightning refused before training began: a bug, with its traceback
                raise
            raise refusal from None

    def _refuse_existing_run_folder(self, trainer: Trainer) -> None:
        if os.environ.get("SLURM_RESTART_COUNT"):  # a requeued SLURM job resumes in its own folder on purpose
            return
        if trainer.loggers:
            # Lightning picks a new version_N by default; an explicitly chosen version must not be reused.
            log_dir = trainer.log_dir
            if log_dir and _holds_files(Path(log_dir)):
                raise UserError(
                    f"The run folder {log_dir} already exists and digitlab never writes into an earlier run. "
                    "Leave the logger's version unset (a new version_N is chosen), or pick an unused version."
                )
        elif self.subcommand == "fit":
            # Without a logger there is no run folder: checkpoints go to default_root_dir/checkpoints, where
            # an earlier run's best and last checkpoints would be overwritten.
            for callback in trainer.checkpoint_callbacks:
                folder = Path(callback.dirpath or Path(trainer.default_root_dir) / "checkpoints")
                if _holds_files(folder):
                    raise UserError(
                        f"{folder} already holds checkpoints of an earlier run, and digitlab never overwrites "
                        "a checkpoint. Give this run its own folder with --trainer.default_root_dir DIR."
                    )

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any) -> LightningArgumentParser:
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        # Checkpoints load weights-only (no code runs on load); `--weights_only false` is the explicit opt-out.
        parser.set_defaults(weights_only=True)
        # Every subcommand takes the options of the others' configs, so that a run's config.yaml works with
        # all of them (`digitlab test --config lightning_logs/version_0/config.yaml`); unused ones are ignored.
        ignored = "" if subcommand == "fit" else " (Used by `fit` only.)"
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=True,
            help="After fitting, evaluate the best checkpoint (or the final weights) on the test set." + ignored,
        )
        parser.add_argument(
            "--pictures",
            type=bool,
            default=True,
            help="Log TensorBoard pictures: class examples and means, confusion matrices, worst mistakes (and "
            "per-class test accuracies)." + (" (Not used by `predict`.)" if subcommand == "predict" else ""),
        )
        if subcommand == "predict":  # the table of predictions, and `--predictions.csv FILE`
            parser.add_lightning_class_args(PredictionWriter, "predictions")
        return parser

    def before_instantiate_classes(self) -> None:
        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else self.config
        extra = []  # trainer_defaults' callbacks join the config's own
        if subcommand and config.get("pictures"):
            extra += picture_callbacks()
        if config.trainer.get("enable_progress_bar") is not False and not _configures(config, "ProgressBar"):
            # Lightning's bar redraws after every batch by default, which costs more than a small model's step.
            extra.append(TQDMProgressBar(refresh_rate=PROGRESS_BAR_REFRESH_RATE))
        if config.trainer.get("enable_checkpointing") is not False and not _configures(config, "ModelCheckpoint"):
            # Instead of Lightning's default (the newest epoch's weights): last.ckpt after every epoch.
            extra.append(ModelCheckpoint(save_top_k=0, save_last=True))
        callbacks = self.trainer_defaults.get("callbacks", [])
        self.trainer_defaults = {**self.trainer_defaults, "callbacks": [*callbacks, *extra]}

    def after_fit(self) -> None:
        if not self.config.fit.test_after_fit or self.trainer.interrupted:
            return
        checkpoint = self.trainer.checkpoint_callback
        ckpt_path = "best" if checkpoint is not None and checkpoint.best_model_path else None
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=ckpt_path)
        self.after_test()

    def after_test(self) -> None:
        metrics = self.trainer.callback_metrics
        if "test/acc" in metrics and self.trainer.is_global_zero:
            print(f"Test accuracy: {metrics['test/acc'].item():.4f} on {int(metrics['test/images'])} images")


def _model_class(model_config: Any) -> type:
    """The configured model's class (the config, not a checkpoint, names it: importing it is the user's choice)."""
    module, _, name = model_config.class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


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


def _holds_files(folder: Path) -> bool:
    return folder.is_dir() and any(folder.iterdir())


def _configures(config: Any, class_name: str) -> bool:
    """Whether the config's trainer callbacks include one whose class path contains `class_name`."""
    callbacks = config.trainer.get("callbacks") or []
    callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
    return any(class_name in str(getattr(c, "class_path", c)) for c in callbacks)


def _quiet_lightning_notices() -> None:
    """Drop what says nothing about the user's run: advertisements and internal deprecations."""
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")  # Lightning vs torch 2.14
    # Lightning's all_gather (the mistakes picture under DDP) vs torch 2.14:
    warnings.filterwarnings("ignore", message=r"torch\.distributed\.nn\.functional\.all_gather is deprecated")
    # Every epoch logs its training metrics anyway; a short epoch loses nothing:
    warnings.filterwarnings("ignore", message=r"The number of training batches \(\d+\) is smaller than the logging")
    # jsonargparse vs LightningCLI's own calls (nothing a user can change):
    warnings.filterwarnings("ignore", message=r"\s*skip_none parameter was deprecated")
    for handler in logging.getLogger("lightning.pytorch").handlers:
        handler.addFilter(lambda record: not record.getMessage().startswith("💡 Tip") and
                          "LitLogger" not in record.getMessage())


def run(args: Optional[list[str]] = None) -> None:
    """`digitlab fit|validate|test|predict ARGS` (`sys.argv` when None), for `digitlab.cli.main`."""
    _quiet_lightning_notices()
    DigitLabCLI(args=args)
