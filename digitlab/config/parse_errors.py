"""jsonargparse's parse errors, rewritten as one paragraph that says what, where, and how to fix it."""

from __future__ import annotations

import re
from argparse import ArgumentError
from pathlib import Path

from digitlab.config.bounded_yaml import ConfigTooLarge, DuplicateKey, check_size, check_unique_keys
from digitlab.training.compat import parser_actions
from digitlab.utils.text import closest, did_you_mean

MAX_LINE, MAX_WORDS = 300, 1500  # characters of jsonargparse's message quoted: per line, in all
_CLASS_PROBLEM = re.compile(r'Parser key "([^"]+)": Does not validate against any of the Union subtypes.*?'
                            r"Problem with given class_path '([^']+)':\s*(.+?)(?: - |$)")
_UNKNOWN_KEY = (
    re.compile(r"does not accept option '([^']+)'"),
    re.compile(r"unrecognized arguments: --([^\s=]+)"),
    re.compile(r'Key "([^"]+)" is not expected'),
)


def known_keys(parser) -> list[str]:
    """Every dotted option a (sub)command parser accepts, e.g. ``trainer.max_epochs``, ``data.batch_size``."""
    keys = []
    for action in parser_actions(parser):
        if action.dest not in ("help", "config", "print_config") and not action.dest.startswith("=="):
            keys.append(action.dest)
    return keys


def explain(error: ArgumentError | UnicodeDecodeError, parser, subcommand: str | None, args: list[str]) -> str:
    """One paragraph: jsonargparse's own words, the closest known option for an unknown one, where to look.

    A `UnicodeDecodeError` is what jsonargparse lets through when a config file is not text."""
    words = " ".join(_bounded(line.strip(), MAX_LINE) for line in str(error).splitlines() if line.strip())
    parts = [_bounded(words, MAX_WORDS).rstrip(".") + "."]
    if isinstance(error, UnicodeDecodeError):
        parts = [_name_the_file_that_is_not_text(error, args)]
    elif parts[0].startswith("Problems parsing config"):
        parts = [_name_the_broken_file(args) or parts[0]]
    elif parts[0].startswith("Unexpected config"):
        parts = [_name_the_empty_file(args) or parts[0]]
    elif found := _CLASS_PROBLEM.search(words):  # jsonargparse lists every type it tried: keep what went wrong
        key, class_path, problem = found.groups()
        parts = [f"{key}: {class_path}: {problem.strip().rstrip('.')}."]
        if required := re.search(r"arguments are required: ([\w, ]+)", problem):
            first = required.group(1).split(",")[0].strip()
            parts.append(f"Give them in its init_args (for example `--{key}.{first} VALUE`).")
    for pattern in _UNKNOWN_KEY:
        found = pattern.search(parts[0])
        if found:
            parts[0] += did_you_mean(closest(found.group(1), known_keys(parser)))
            break
    command = f"digitlab {subcommand}" if subcommand else "digitlab"
    parts.append(f"Run `{command} --help` for the options (`--print_config` shows a full config).")
    return " ".join(parts)


def _bounded(text: str, limit: int) -> str:
    """`text`, cut after `limit` characters: jsonargparse quotes whole values, however long."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text) - limit:,} more characters)"


def _config_files(args: list[str]) -> list[str]:
    """The files given as ``--config FILE``, ``--config=FILE`` or ``-c FILE``, in order."""
    given = [value for flag, value in zip(args, args[1:]) if flag in ("--config", "-c")]
    given += [arg.partition("=")[2] for arg in args if arg.startswith("--config=")]
    return [value for value in given if Path(value).is_file()]


def _name_the_file_that_is_not_text(error: UnicodeDecodeError, args: list[str]) -> str:
    for value in _config_files(args):
        try:
            Path(value).read_text()
        except UnicodeDecodeError as undecodable:
            where = f"byte 0x{undecodable.object[undecodable.start]:02x} at offset {undecodable.start}"
            return (f"The config file {value} is not {undecodable.encoding.upper()} text ({where}): is it the "
                    "right file? A config is YAML, saved as plain UTF-8 text.")
    return f"A config file is not text ({error}). A config is YAML, saved as plain UTF-8 text."


def _name_the_empty_file(args: list[str]) -> str | None:
    """jsonargparse says "Unexpected config:" for a config file that sets nothing: say which file."""
    import yaml

    for value in _config_files(args):
        try:
            if yaml.safe_load(Path(value).read_text()) is None:
                return (f"The config file {value} is empty (or holds only comments): it sets nothing. Start from "
                        "one of configs/*.yaml, which set model:, data: and trainer:.")
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue
    return None


def _name_the_broken_file(args: list[str]) -> str | None:
    """jsonargparse reports a YAML syntax error without the file's name: find the file and say so."""
    import yaml

    for value in _config_files(args):
        try:
            text = Path(value).read_text()
            check_size(text)
            yaml.safe_load(text)
            check_unique_keys(text)
        except (ConfigTooLarge, DuplicateKey) as error:
            return f"The config file {value} {error}."
        except yaml.YAMLError as error:
            where = getattr(error, "problem_mark", None)
            line = f" (line {where.line + 1}, column {where.column + 1})" if where else ""
            problem = getattr(error, "problem", None) or str(error).splitlines()[0]
            return f"The config file {value} is not valid YAML{line}: {problem}."
    return None
