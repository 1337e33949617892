"""The YAML files that command-line options name, read through the bounded loader before jsonargparse reads
them: jsonargparse reads a named file whole and builds every value before digitlab's loader sees it."""

from __future__ import annotations

from pathlib import Path

from digitlab.config.bounded_yaml import load_yaml_file

CONFIG_FLAGS = ("--config", "-c")
YAML_SUFFIXES = (".yaml", ".yml", ".json")


def check_named_files(args: list[str]) -> None:
    """Raise `UnreadableYaml` for a file given to ``--config`` (or to any option, when its name says YAML or
    JSON) that is too large, not text, not YAML, or beyond the bounds of `digitlab.config.bounded_yaml`."""
    for flag, value in _options(args):
        path = Path(value)
        if (flag in CONFIG_FLAGS or path.suffix.lower() in YAML_SUFFIXES) and path.is_file():
            load_yaml_file(path, "config file" if flag in CONFIG_FLAGS else f"file given to {flag}")


def _options(args: list[str]) -> list[tuple[str, str]]:
    """(flag, value) for ``--flag value`` and ``--flag=value``."""
    pairs = []
    for index, arg in enumerate(args):
        flag, equals, value = arg.partition("=")
        if equals and flag.startswith("-"):
            pairs.append((flag, value))
        elif arg.startswith("-") and index + 1 < len(args) and not args[index + 1].startswith("-"):
            pairs.append((arg, args[index + 1]))
    return pairs
