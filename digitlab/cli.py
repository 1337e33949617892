"""The `digitlab` command: LightningCLI with registry names, test-after-fit, and clear user errors."""

from __future__ import annotations

import argparse
import inspect
import logging
import sys
import warnings
from typing import Any, Optional

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from digitlab.data import MNISTDataModule
from digitlab.errors import PluginWarning, UserError
from digitlab.model_names import YAML_MODE, register_yaml_loader, rewrite_model_args
from digitlab.models import DigitModel
from digitlab.registry import discover_models, model_entries

EPILOG = "Run `digitlab models` to list the models, `digitlab SUBCOMMAND --help` for a subcommand's options."


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
            args=args,
            **kwargs,
        )

    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        kwargs.setdefault("parser_mode", YAML_MODE)
        kwargs.setdefault("epilog", EPILOG)
        return super().init_parser(**kwargs)

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        if args is not None and not isinstance(args, list):  # a dict or Namespace: no names to rewrite
            return super().parse_arguments(parser, args)
        self.config = parser.parse_args(rewrite_model_args(sys.argv[1:] if args is None else args))

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any) -> LightningArgumentParser:
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if subcommand == "fit":
            parser.add_argument(
                "--test_after_fit",
                type=bool,
                default=True,
                help="After fitting, evaluate the best checkpoint (or the final weights) on the test set.",
            )
        return parser

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
    if issubclass(category, PluginWarning):  # a user's problem, not a code location: one plain line
        return f"digitlab: warning: {message}\n"
    return _python_format_warning(message, category, filename, lineno, line)


def _quiet_lightning_notices() -> None:
    """Drop what says nothing about the user's run: advertisements and an internal deprecation."""
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")  # Lightning vs torch 2.14
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
        DigitLabCLI(args=argv)
    except Exception as error:
        user_error = _user_error(error)
        if user_error is None:
            raise
        print(f"digitlab: error: {user_error}", file=sys.stderr)
        sys.exit(2)


def _user_error(error: Optional[BaseException]) -> Optional[UserError]:
    """`error` if it is a `UserError`, or the `UserError` that caused it: jsonargparse wraps what a class's
    ``__init__`` raises (a model rejecting a value) in errors of its own."""
    while error is not None and not isinstance(error, UserError):
        error = error.__cause__
    return error


if __name__ == "__main__":
    main()
