"""The `digitlab` command: `fit|validate|test|predict` (LightningCLI, in `digitlab.trainer_cli`), `models` and
`report`, with clear user errors. Each command imports only what it needs: `report` reads logs without Lightning."""

from __future__ import annotations

import argparse
import inspect
import sys
import warnings
from typing import Any, Optional

from digitlab.errors import PluginWarning, SkippedFileWarning, UserError


def init_arguments(cls: type) -> list[inspect.Parameter]:
    """The keyword arguments `cls(...)` accepts: its `__init__`'s and, through ``**kwargs``, its bases' up to
    `DigitModel` (a subclass's own argument wins over a base's of the same name)."""
    from digitlab.models import DigitModel

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
    from digitlab.registry import model_entries

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


_other_format_warning = warnings.formatwarning  # Lightning's, once `_use_warning_format` has run


def _format_warning(message, category, filename, lineno, line=None) -> str:
    if issubclass(category, (PluginWarning, SkippedFileWarning)):  # a user's problem, not code: one plain line
        return f"digitlab: warning: {message}\n"
    return _other_format_warning(message, category, filename, lineno, line)


def _use_warning_format() -> None:
    """Put `_format_warning` in front of the format in place, which goes on formatting all other warnings. Called
    after Lightning's import, which puts a format of its own (for Lightning's warnings) in place."""
    global _other_format_warning
    if warnings.formatwarning is not _format_warning:
        _other_format_warning, warnings.formatwarning = warnings.formatwarning, _format_warning


def main(argv: Optional[list[str]] = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    try:
        if args[:1] == ["report"]:  # reads logs and checkpoints: needs neither Lightning nor the models
            from digitlab.report import report_command

            report_command(args[1:])
            return
        import digitlab.registry  # noqa: F401  (the models, and so Lightning: seconds to import)

        _use_warning_format()
        if args[:1] == ["models"]:
            models_command(args[1:])
            return
        from digitlab import trainer_cli

        trainer_cli.run(argv)
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
