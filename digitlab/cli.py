"""The `digitlab` command: its subcommands (`SUBCOMMANDS`), each run by a function imported only when it runs,
and user errors printed as one paragraph. `digitlab --help` and `report` need no Lightning."""

from __future__ import annotations

import importlib
import inspect
import sys
import warnings
from dataclasses import dataclass
from typing import Optional

from digitlab.config.option_checks import OptionParser
from digitlab.errors import PluginWarning, RunWarning, SkippedFileWarning, StopSignal, Stopped, UserError
from digitlab.utils import installed_torch, stop_requests
from digitlab.utils.tables import aligned_lines
from digitlab.utils.text import closest, did_you_mean


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
    from digitlab.models.arguments import init_arguments
    from digitlab.models.registry import model_entries

    entries = model_entries()
    header, *lines = aligned_lines(("name", "class path", "source", "description"),
                                   [(e.name, e.class_path, e.source, e.description) for e in entries])
    print(header)
    for entry, line in zip(entries, lines):
        print(line)
        if verbose:
            for parameter in init_arguments(entry.cls):
                print(f"    {format_argument(parameter)}")
    if verbose:
        print("\n`digitlab fit --model.help NAME` describes each argument.")


def models_command(args: list[str]) -> None:
    """`digitlab models [--verbose]`."""
    import digitlab.models.registry  # noqa: F401  (the models, and so Lightning: seconds to import)

    _use_warning_format()  # again: Lightning's import put its own format in place
    print_models(verbose=models_parser().parse_args(args).verbose)


def models_parser() -> OptionParser:
    parser = OptionParser(
        "models",
        description="List the registered models: built-in ones and those of installed plugins (entry-point "
        "group 'digitlab.models'; DIGITLAB_DISABLE_PLUGINS=1 skips plugins).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="also show each model's init arguments")
    return parser


_other_format_warning = warnings.formatwarning  # Lightning's, once `_use_warning_format` has run


def _format_warning(message, category, filename, lineno, line=None) -> str:
    if issubclass(category, (PluginWarning, RunWarning, SkippedFileWarning)):  # a user's problem, not code: one plain line
        return f"digitlab: warning: {message}\n"
    return _other_format_warning(message, category, filename, lineno, line)


def _use_warning_format() -> None:
    """Put `_format_warning` in front of the format in place, which goes on formatting all other warnings. Called
    after Lightning's import, which puts a format of its own (for Lightning's warnings) in place."""
    global _other_format_warning
    if warnings.formatwarning is not _format_warning:
        _other_format_warning, warnings.formatwarning = warnings.formatwarning, _format_warning


@dataclass(frozen=True)
class Subcommand:
    """One `digitlab` subcommand: what it does, and the function (``module:function``) that runs it.

    The function gets the arguments after the subcommand's name, or the whole argument list with
    `whole_argv` (LightningCLI parses the subcommand itself). Modules are imported only when their subcommand
    runs, so `digitlab --help` needs neither Lightning nor torch. `parser` names the function that builds an
    argparse subcommand's parser, so that tests can check every option.
    """

    summary: str
    target: str
    whole_argv: bool = False
    parser: Optional[str] = None  # ``module:function`` that builds its argparse parser; None: LightningCLI's
    torch: bool = True  # it imports torch: torchvision is checked against it first (`installed_torch.check`)


SUBCOMMANDS: dict[str, Subcommand] = {
    "fit": Subcommand("train a model, then test its best checkpoint", "digitlab.training.run:main", True),
    "validate": Subcommand("evaluate a checkpoint on the validation split", "digitlab.training.run:main", True),
    "test": Subcommand("evaluate a checkpoint on the official test set", "digitlab.training.run:main", True),
    "predict": Subcommand("predict MNIST's test digits or your own pictures", "digitlab.training.run:main", True),
    "lr_find": Subcommand("suggest a learning rate: Lightning's range test on the run a fit would train",
                          "digitlab.training.lr_find:lr_find_command", parser="digitlab.training.lr_find:lr_find_parser"),
    "models": Subcommand("list the registered models (built-in and plugins)", "digitlab.cli:models_command",
                         parser="digitlab.cli:models_parser"),
    # The report's command with the sweep's folders added: the sweep extends the report, not the reverse.
    "report": Subcommand("compare runs in one table (and plot their validation accuracy)",
                         "digitlab.sweep.report:report_command", parser="digitlab.report.command:report_parser",
                         torch=False),
    "export": Subcommand("write a checkpoint as an ONNX or TorchScript file, checked on MNIST",
                         "digitlab.deploy.export:export_command", parser="digitlab.deploy.export:export_parser"),
    "serve": Subcommand("serve a checkpoint over HTTP, with a page to draw digits", "digitlab.deploy.serve:serve_command",
                         parser="digitlab.deploy.serve.command:serve_parser"),
    "sweep": Subcommand("tune hyperparameters with Optuna, every trial a fit", "digitlab.sweep.command:sweep_command",
                         parser="digitlab.sweep.command:sweep_parser"),
}


def usage() -> str:
    width = max(map(len, SUBCOMMANDS))
    lines = ["usage: digitlab SUBCOMMAND [OPTIONS]", "", "Handwritten-digit classifiers on MNIST with PyTorch "
             "Lightning.", "", "subcommands:"]
    lines += [f"  {name:<{width}}  {command.summary}" for name, command in SUBCOMMANDS.items()]
    lines += ["", "`digitlab SUBCOMMAND --help` shows a subcommand's options. Start with "
              "`digitlab fit --config configs/lenet5.yaml`."]
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    command = f"digitlab {args[0]}" if args else "digitlab"
    stop_requests.install()
    try:
        _run(args)
    except StopSignal as stop:  # a stop the subcommand did not report itself: where nothing is half-written
        _fresh_line()
        print(f"digitlab: stopped: by {stop.name} before `{command}` had finished; nothing it had not "
              "reported is written. Run it again.", file=sys.stderr)
        sys.exit(stop.exit_code)
    except Exception as error:
        user_error = _user_error(error)
        if user_error is None:
            raise
        if isinstance(user_error, Stopped):
            _fresh_line()
        print(f"digitlab: {user_error.label}: {user_error}", file=sys.stderr)
        sys.exit(user_error.exit_code)
    finally:
        if argv is None:  # the console script: what is left is the interpreter's shutdown
            stop_requests.exit_at_once_from_now()
        else:
            stop_requests.uninstall()
    request = stop_requests.requested()
    if request is not None:  # it came as the subcommand finished: its work is done, and the signal is answered
        print(f"digitlab: stopped: by {request.name} after `{command}` had finished: everything it "
              "reported is written.", file=sys.stderr)
        sys.exit(request.exit_code)


def _run(args: list[str]) -> None:
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return
    command = SUBCOMMANDS.get(args[0])
    if command is None:
        hint = did_you_mean(closest(args[0], SUBCOMMANDS))
        raise UserError(f"'{args[0]}' is not a digitlab subcommand.{hint} The subcommands are "
                        f"{', '.join(SUBCOMMANDS)}; `digitlab --help` describes them.")
    if command.torch:
        installed_torch.check()
    module_name, _, function_name = command.target.partition(":")
    function = getattr(importlib.import_module(module_name), function_name)
    _use_warning_format()  # after the import, which may have brought Lightning and its warning format
    function(args if command.whole_argv else args[1:])


def _fresh_line() -> None:
    """End the progress bar's line on a terminal (the bar leaves the cursor after itself), so that the message
    about the stop starts a line of its own."""
    if sys.stdout.isatty():
        sys.stdout.write("\n")
        sys.stdout.flush()


def _user_error(error: Optional[BaseException]) -> Optional[UserError]:
    """`error` if it is a `UserError`, or the `UserError` that caused it: jsonargparse wraps what a class's
    ``__init__`` raises (a model rejecting a value) in errors of its own."""
    original = error
    while error is not None and not isinstance(error, UserError):
        error = error.__cause__
    return error or installed_torch.mismatch_error(original)


if __name__ == "__main__":
    main()
