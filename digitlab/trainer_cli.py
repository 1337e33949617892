"""`digitlab fit|validate|test|predict`: LightningCLI with registry names, test-after-fit, and clear user errors."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from argparse import ArgumentError
from pathlib import Path
from typing import Any, Optional

from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.exceptions import SIGTERMException

from digitlab import checkpoints
from digitlab.callbacks import PredictionWriter, default_callbacks, picture_callbacks
from digitlab.data import MNISTDataModule
from digitlab.errors import UserError
from digitlab.model_names import YAML_MODE, register_yaml_loader, rewrite_model_args
from digitlab.models import DigitModel
from digitlab.parse_errors import explain
from digitlab.registry import discover_models

PROGRESS_BAR_REFRESH_RATE = 20  # batches between redraws of the progress bar
EPILOG = (
    "Run `digitlab models` to list the models, `digitlab report` to compare the runs in lightning_logs, "
    "`digitlab SUBCOMMAND --help` for a subcommand's options."
)


class DigitLabCLI(LightningCLI):
    """`digitlab fit|validate|test|predict`, with models chosen by registry name, class name or class path."""

    def __init__(self, args: Optional[list[str]] = None, **kwargs: Any) -> None:
        discover_models()  # plugins must be imported before the parser lists DigitModel's subclasses
        register_yaml_loader()
        super().__init__(
            DigitModel,
            MNISTDataModule,
            subclass_mode_model=True,
            # Each model owns its optimizer argument; a global --optimizer would silently override it.
            auto_configure_optimizers=False,
            trainer_defaults={"callbacks": default_callbacks()},
            args=args,
            **kwargs,
        )

    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        kwargs.setdefault("parser_mode", YAML_MODE)
        kwargs.setdefault("epilog", EPILOG)
        kwargs.setdefault("exit_on_error", False)  # parse errors reach parse_arguments, which explains them
        return super().init_parser(**kwargs)

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        if args is not None and not isinstance(args, list):  # a dict or Namespace: no names to rewrite
            return super().parse_arguments(parser, args)
        args = rewrite_model_args(sys.argv[1:] if args is None else args)
        try:
            self.config = parser.parse_args(args)
        except (ArgumentError, UnicodeDecodeError) as error:  # the latter: a config file that is not text
            subcommand = next((a for a in args if a in self.subcommands()), None)
            sub_parser = self._subcommand_parsers.get(subcommand, parser)
            raise UserError(explain(error, sub_parser, subcommand, args)) from None

    def _parse_ckpt_path(self) -> None:
        # Before LightningCLI reads the checkpoint's hyperparameters into the config (which would silently
        # swap the model for the checkpoint's): resolve `last`, refuse a missing file or another model.
        subcommand = self.config.get("subcommand")
        if subcommand:
            config = self.config[subcommand]
            config.ckpt_path = checkpoints.resolve(config.get("ckpt_path"), config.trainer)
            if config.ckpt_path and config.ckpt_path not in checkpoints.LIGHTNING_KEYWORDS:
                model = config.get("model")
                class_path = model.get("class_path") if hasattr(model, "get") else None
                checkpoints.check_model(config.ckpt_path, class_path, config.get("weights_only"))
        super()._parse_ckpt_path()

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        try:
            trainer = super().instantiate_trainer(**kwargs)
        except MisconfigurationException as error:
            raise UserError(
                f"The trainer settings cannot run on this machine: {error} Check trainer.accelerator and "
                "trainer.devices (`--config configs/trainer/cpu.yaml` runs anywhere)."
            ) from None
        self._refuse_existing_run_folder(trainer)
        return trainer

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
        if subcommand == "fit":
            parser.add_argument(
                "--test_after_fit",
                type=bool,
                default=True,
                help="After fitting, evaluate the best checkpoint (or the final weights) on the test set.",
            )
        if subcommand in ("fit", "validate", "test"):
            parser.add_argument(
                "--pictures",
                type=bool,
                default=True,
                help="Log TensorBoard pictures: class examples and means, confusion matrices, worst mistakes "
                "(and per-class test accuracies).",
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
        if config.trainer.get("enable_progress_bar") is not False and not _configures_progress_bar(config):
            # Lightning's bar redraws after every batch by default, which costs more than a small model's step.
            extra.append(TQDMProgressBar(refresh_rate=PROGRESS_BAR_REFRESH_RATE))
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


def _holds_files(folder: Path) -> bool:
    return folder.is_dir() and any(folder.iterdir())


def _configures_progress_bar(config: Any) -> bool:
    callbacks = config.trainer.get("callbacks") or []
    callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
    return any("ProgressBar" in str(getattr(c, "class_path", c)) for c in callbacks)


def _quiet_lightning_notices() -> None:
    """Drop what says nothing about the user's run: advertisements and internal deprecations."""
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")  # Lightning vs torch 2.14
    # Lightning's all_gather (the mistakes picture under DDP) vs torch 2.14:
    warnings.filterwarnings("ignore", message=r"torch\.distributed\.nn\.functional\.all_gather is deprecated")
    for handler in logging.getLogger("lightning.pytorch").handlers:
        handler.addFilter(lambda record: not record.getMessage().startswith("💡 Tip"))


def run(args: Optional[list[str]] = None) -> None:
    """`digitlab fit|validate|test|predict ARGS` (`sys.argv` when None), for `digitlab.cli.main`."""
    _quiet_lightning_notices()
    try:
        DigitLabCLI(args=args)
    except SIGTERMException:
        print("digitlab: stopped by SIGTERM (last.ckpt saved; resume with `--ckpt_path last`).", file=sys.stderr)
        sys.exit(143)
