"""jsonargparse's parse errors, rewritten as one paragraph that says what, where, and how to fix it."""

from __future__ import annotations

import re
from argparse import ArgumentError
from pathlib import Path

from digitlab.config.bounded_yaml import MAX_BYTES, UnreadableYaml, load_yaml_file
from digitlab.config.import_names import how_to_install
from digitlab.training.compat import parser_actions
from digitlab.utils.text import closest, did_you_mean

MAX_LINE, MAX_WORDS = 300, 1500  # characters of jsonargparse's message quoted: per line, in all
_CLASS_PROBLEM = re.compile(r'Parser key "([^"]+)": Does not validate against any of the Union subtypes.*?'
                            r"Problem with given class_path '([^']+)':\s*(.+?)(?: - |$)")
# An unknown key, and the group that holds it: "Group 'trainer' does not accept option 'max_epoch'", "Subcommand
# 'fit' does not accept option 'x'", "Option 'x' is not accepted".
_GROUP_OPTION = re.compile(r"(?:Group '([^']+)' )?(?:does not accept option|Option) '([^']+)'")
_MISSING_MODULE = re.compile(r"No module named '([\w.]+)'")
_UNKNOWN_KEY = (
    re.compile(r"does not accept option '([^']+)'"),
    re.compile(r"Option '([^']+)' is not accepted"),
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
    within = ""  # the key whose class a problem is in (``model``)
    if isinstance(error, UnicodeDecodeError):
        parts = [_name_the_file_that_is_not_text(error, args)]
    elif parts[0].startswith("Problems parsing config"):
        parts = [_name_the_broken_file(args) or parts[0]]
    elif parts[0].startswith("Unexpected config"):
        parts = [_name_the_empty_file(args) or parts[0]]
    elif found := _CLASS_PROBLEM.search(words):  # jsonargparse lists every type it tried: keep what went wrong
        key, class_path, problem = found.groups()
        within = key
        parts = [f"{key}: {class_path}: {problem.strip().rstrip('.')}."]
        if missing := _MISSING_MODULE.search(problem):
            return _not_installed(key, class_path, missing.group(1), args)
        if required := re.search(r"arguments are required: ([\w, ]+)", problem):
            first = required.group(1).split(",")[0].strip()
            parts.append(f"Give them in its init_args (for example `--{key}.{first} VALUE`).")
    if option := _GROUP_OPTION.search(parts[0]):
        group, name = option.groups()
        keys = [part for part in f"{within}.{group or ''}.{name}".split(".") if part and part != "init_args"]
        if source := _file_with_key(args, keys):
            parts[0] = parts[0].rstrip(".") + f", in the config file {source}."
    for pattern in _UNKNOWN_KEY:
        found = pattern.search(parts[0])
        if found:
            parts[0] += did_you_mean(closest(found.group(1), known_keys(parser)))
            break
    command = f"digitlab {subcommand}" if subcommand else "digitlab"
    parts.append(f"Run `{command} --help` for the options (`--print_config` shows a full config).")
    return " ".join(parts)


def _not_installed(key: str, class_path: str, missing: str, args: list[str]) -> str:
    """The model (or another class) of a config comes from a package that is not installed: say which and how to
    install it. The config is often a run's config.yaml, written while a plugin was installed."""
    package = class_path.split(".")[0]
    if not missing.split(".")[0] == package:  # the package is there, but something it imports is not
        return (f"{key}: {class_path}: importing it failed: No module named '{missing}', which the package "
                f"{package} needs. Install it (`pip install {missing.split('.')[0]}`, or reinstall {package} with "
                "its dependencies), then run the command again.")
    source = _file_with_key(args, [key, "class_path"])
    where = f" (named in the config file {source})" if source else ""
    return (f"{key}: {class_path}{where}: No module named '{missing}'. "
            f"{how_to_install(package).replace('The model', 'It', 1)}")


def _file_with_key(args: list[str], keys: list[str]) -> str | None:
    """The last config file given in `args` that sets the nested key `keys` (``trainer``, ``max_epoch``),
    looking through ``init_args``: later files win, so the last one is the one the parser complained of."""
    for value in reversed(_config_files(args)):
        try:
            config = load_yaml_file(Path(value), "config file")
        except UnreadableYaml:
            continue
        if _holds(config, keys):
            return value
    return None


def _holds(node, keys: list[str]) -> bool:
    if not keys:
        return True
    if not isinstance(node, dict):
        return False
    if keys[0] in node:
        return _holds(node[keys[0]], keys[1:])
    return "init_args" in node and _holds(node["init_args"], keys)


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
            with open(value, "rb") as stream:
                stream.read(MAX_BYTES).decode("utf-8")
        except OSError:
            continue
        except UnicodeDecodeError as undecodable:
            where = f"byte 0x{undecodable.object[undecodable.start]:02x} at offset {undecodable.start}"
            return (f"The config file {value} is not {undecodable.encoding.upper()} text ({where}): is it the "
                    "right file? A config is YAML, saved as plain UTF-8 text.")
    return f"A config file is not text ({error}). A config is YAML, saved as plain UTF-8 text."


def _name_the_empty_file(args: list[str]) -> str | None:
    """jsonargparse says "Unexpected config:" for a config file that sets nothing: say which file."""
    for value in _config_files(args):
        try:
            if load_yaml_file(Path(value), "config file") is None:
                return (f"The config file {value} is empty (or holds only comments): it sets nothing. Start from "
                        "one of configs/*.yaml, which set model:, data: and trainer:.")
        except UnreadableYaml:
            continue
    return None


def _name_the_broken_file(args: list[str]) -> str | None:
    """jsonargparse reports a YAML syntax error without the file's name: find the file and say so."""
    for value in _config_files(args):
        try:
            load_yaml_file(Path(value), "config file")
        except UnreadableYaml as error:
            return str(error)
    return None
