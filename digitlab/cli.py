"""The `digitlab` command: LightningCLI with registry names, test-after-fit, and clear user errors."""

from __future__ import annotations

import argparse
import inspect
import logging
import os
import sys
from pathlib import Path
import warnings
from typing import Any, Optional

from argparse import ArgumentError

from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.exceptions import SIGTERMException

from digitlab import checkpoints
from digitlab.callbacks import PredictionWriter, default_callbacks, picture_callbacks

from digitlab.data import MNISTDataModule
from digitlab.errors import PluginWarning, SkippedFileWarning, UserError
from digitlab.model_names import YAML_MODE, register_yaml_loader, rewrite_model_args
from digitlab.models import DigitModel
from digitlab.parse_errors import explain
from digitlab.registry import discover_models, model_entries
from digitlab.report import report_command

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
        except ArgumentError as error:
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

    @staticmethod
    def _refuse_existing_run_folder(trainer: Trainer) -> None:
        # Lightning picks a new version_N by default; an explicitly chosen version must not be reused.
        log_dir = trainer.log_dir
        if log_dir and Path(log_dir).is_dir() and any(Path(log_dir).iterdir()) and not os.environ.get(
            "SLURM_RESTART_COUNT"
        ):  # a requeued SLURM job resumes in its own folder on purpose
            raise UserError(
                f"The run folder {log_dir} already exists and digitlab never writes into an earlier run. "
                "Leave the logger's version unset (a new version_N is chosen), or pick an unused version."
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


def _configures_progress_bar(config: Any) -> bool:
    callbacks = config.trainer.get("callbacks") or []
    callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
    return any("ProgressBar" in str(getattr(c, "class_path", c)) for c in callbacks)


def init_arguments(cls: type) -> list[inspect.Parameter]:
    """The keyword arguments `cls(...)` accepts: its `__init__`'s and, through ``**kwargs``, its bases' up to
    `DigitModel` (a subclass's own argument wins over a base's of the same name)."""
    arguments: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        parameters = list(inspect.signature(klass.__init__).parameters.values())[1:]  # without self
        for parameter in parameters:
            if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY):
                arguments.setdefault(parameter.name, parameter)
        if klass is DigitModel or all(p.kind is not p.VAR_KEYWORD for p in parameters):
            break
    return list(arguments.values())


def format_argument(parameter: inspect.Parameter) -> str:
    """``name: type = default``, with classes and functions as import paths (``torch.optim.adam.Adam``)."""
    text = parameter.name
    if parameter.annotation is not parameter.empty:
        annotation = parameter.annotation
        text += f": {annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)}"
    if parameter.default is not parameter.empty:
        default = parameter.default
        named = inspect.isclass(default) or inspect.isfunction(default)
        text += f" = {f'{default.__module__}.{default.__qualname__}' if named else repr(default)}"
    return text


def print_models(verbose: bool = False) -> None:
    entries = model_entries()
    header = ("name", "class path", "source")
    widths = [max(map(len, column)) for column in zip(header, *((e.name, e.class_path, e.source) for e in entries))]

    def row(name: str, path: str, source: str, description: str) -> str:
        return "  ".join(f"{cell:<{width}}" for cell, width in zip((name, path, source), widths)) + f"  {description}"

    print(row(*header, "description"))
    for entry in entries:
        print(row(entry.name, entry.class_path, entry.source, entry.description))
        if verbose:
            for parameter in init_arguments(entry.cls):
                print(f"    {format_argument(parameter)}")
    if verbose:
        print("\n`digitlab fit --model.help NAME` describes each argument.")


def models_command(args: list[str]) -> None:
    """`digitlab models [--verbose]`."""
    parser = argparse.ArgumentParser(
        prog="digitlab models",
        description="List the registered models: built-in ones and those of installed plugins (entry-point "
        "group 'digitlab.models'; DIGITLAB_DISABLE_PLUGINS=1 skips plugins).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="also show each model's init arguments")
    print_models(verbose=parser.parse_args(args).verbose)


_python_format_warning = warnings.formatwarning


def _format_warning(message, category, filename, lineno, line=None) -> str:
    if issubclass(category, (PluginWarning, SkippedFileWarning)):  # a user's problem, not code: one plain line
        return f"digitlab: warning: {message}\n"
    return _python_format_warning(message, category, filename, lineno, line)


def _quiet_lightning_notices() -> None:
    """Drop what says nothing about the user's run: advertisements and internal deprecations."""
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")  # Lightning vs torch 2.14
    # Lightning's all_gather (the mistakes picture under DDP) vs torch 2.14:
    warnings.filterwarnings("ignore", message=r"torch\.distributed\.nn\.functional\.all_gather is deprecated")
    for handler in logging.getLogger("lightning.pytorch").handlers:
        handler.addFilter(lambda record: not record.getMessage().startswith("💡 Tip"))


def main(argv: Optional[list[str]] = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    warnings.formatwarning = _format_warning
    _quiet_lightning_notices()
    try:
        if args[:1] == ["models"]:
            models_command(args[1:])
            return
        if args[:1] == ["report"]:
            report_command(args[1:])
            return
        DigitLabCLI(args=argv)
    except SIGTERMException:
        print("digitlab: stopped by SIGTERM (last.ckpt saved; resume with `--ckpt_path last`).", file=sys.stderr)
        sys.exit(143)
    except Exception as error:
        user_error = _user_error(error)
        if user_error is None:
            raise
        print(f"digitlab: error: {user_error}", file=sys.stderr)
        sys.exit(user_error.exit_code)


def _user_error(error: Optional[BaseException]) -> Optional[UserError]:
    """`error` if it is a `UserError`, or the `UserError` that caused it: jsonargparse wraps what a class's
    ``__init__`` raises (a model rejecting a value) in errors of its own."""
    while error is not None and not isinstance(error, UserError):
        error = error.__cause__
    return error


if __name__ == "__main__":
    main()
