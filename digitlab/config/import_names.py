"""Which names in data may reach the parser: a checkpoint's hyperparameters, or a run's config.yaml that digitlab
picked up itself, are data, yet jsonargparse imports (and may call) what a value names.

What could be an import (`could_import`): a string of dot-separated Python identifiers (``os.system``,
``this.s``), since that is what jsonargparse's ``import_object`` accepts, whose first part is a module Python
finds (a name such as ``preds.csv`` names no module, so the parser could not import it); and any string at all
given for an argument whose type is not plain data (a callable or a class: ``optimizer: "SGD"``). Such a value,
wherever it is (a ``class_path``, any nested value, a mapping's key, a list's item), must name an allowed class,
found among the modules already imported (nothing is imported to check it):

- the configured model's class, or a registered model's;
- a ``torch.optim`` optimizer or a ``torch.optim.lr_scheduler`` scheduler class;
- in a run's config only, a Lightning callback or logger class of Lightning or digitlab (its ``trainer``).

A config the user names with ``--config`` is their own code and is not checked here.
"""

from __future__ import annotations

import collections.abc
import importlib.util
import inspect
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any, Iterator, NamedTuple, Optional

from digitlab.errors import UserError

PLAIN_TYPES = (type(None), bool, int, float, complex, str, bytes, Path)
PLAIN_WORDS = {"None", "bool", "int", "float", "complex", "str", "bytes", "Path", "Any", "Optional", "Union", "Literal",
               "list", "tuple", "dict", "set", "List", "Tuple", "Dict", "Sequence", "Mapping", "typing"}


def could_import(text: str) -> bool:
    """Whether jsonargparse could import something for `text` given as a dotted name."""
    parts = text.strip().split(".")
    if len(parts) < 2 or not all(part.isidentifier() for part in parts):
        return False
    if parts[0] in sys.modules:
        return True
    try:
        return importlib.util.find_spec(parts[0]) is not None  # finds a top-level module without running it
    except (ImportError, ValueError):
        return False


def missing_package(class_path: str) -> Optional[str]:
    """The top-level package of `class_path` (``digitlab_tinycnn`` of ``digitlab_tinycnn.model.TinyCNN``) when
    Python cannot find it (an uninstalled plugin), else None. Nothing is imported."""
    package = class_path.strip().split(".")[0]
    if not package.isidentifier() or "." not in class_path.strip() or package in sys.modules:
        return None
    try:
        return package if importlib.util.find_spec(package) is None else None
    except (ImportError, ValueError):
        return None


def how_to_install(package: str) -> str:
    """How to get the model of a package that is not installed: the sentence every command says."""
    return (f"The model comes from the Python package {package}, which is not installed here: install the plugin "
            f"that provides it (`pip install {package}`, or `pip install PATH` for a plugin's source folder), then "
            "run the command again; `digitlab models` lists the models installed.")


class _Rules(NamedTuple):
    model_class: Optional[type]
    run_config: bool
    user_names: frozenset[str]  # what the user typed on the command line: their own choice


def foreign_names(value: Any, model_class: Optional[type], run_config: bool = False,
                  user_names: frozenset[str] = frozenset()) -> Iterator[tuple[str, str]]:
    """``(where, name)`` for every name in `value` (hyperparameters or a config, nested) that could be an import
    and is not an allowed class; `model_class` takes the top-level mapping's arguments, `user_names` are
    allowed as well."""
    rules = _Rules(model_class, run_config, user_names)
    yield from _walk(value, "", _code_arguments(model_class), rules)


def refusal(source: str, where: str, name: str, fix: str) -> UserError:
    """One paragraph: what was refused, where, and how to go on."""
    place = f" at '{where}'" if where else ""
    return UserError(
        f"{source} names {name!r}{place}, which the parser would import as code. digitlab accepts from a checkpoint "
        "or a run's config only the configured model's class, a registered model, and torch.optim optimizers and "
        f"schedulers (a file is data, not code). {fix}"
    )


def _walk(value: Any, where: str, code_keys: set[str], rules: _Rules
          ) -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        named = value.get("class_path")
        named_class = _allowed_class(named, rules) if isinstance(named, str) else None
        for key, item in value.items():
            place = f"{where}.{key}" if where else str(key)
            if isinstance(key, str) and could_import(key) and _allowed_class(key, rules) is None:
                yield place, key
            if key == "class_path" and isinstance(item, str):
                if named_class is None:
                    yield place, item
            elif key == "init_args" and named_class is not None:
                yield from _walk(item, place, _code_arguments(named_class), rules)
            elif isinstance(item, str) and key in code_keys:
                if _allowed_class(item, rules) is None:
                    yield place, item
            elif isinstance(item, (list, tuple)) and key in code_keys:
                yield from _walk_items(item, place, rules, typed_code=True)
            else:
                yield from _walk(item, place, set(), rules)
    elif isinstance(value, (list, tuple)):
        yield from _walk_items(value, where, rules, typed_code=False)
    elif isinstance(value, str) and could_import(value) and _allowed_class(value, rules) is None:
        yield where, value


def _walk_items(items: Any, where: str, rules: _Rules, typed_code: bool
                ) -> Iterator[tuple[str, str]]:
    for index, item in enumerate(items):
        place = f"{where}[{index}]"
        if typed_code and isinstance(item, str):
            if _allowed_class(item, rules) is None:
                yield place, item
        else:
            yield from _walk(item, place, set(), rules)


def _allowed_class(name: str, rules: _Rules) -> Optional[type]:
    """The allowed class `name` names (a dotted path, or a bare class name of torch.optim), or None."""
    if name in rules.user_names:
        return object
    candidates = [name] if "." in name else [f"torch.optim.{name}", f"torch.optim.lr_scheduler.{name}"]
    for candidate in candidates:
        found = _loaded_class(candidate.strip())
        if found is not None and _allowed_kind(found, rules.model_class, rules.run_config):
            return found
    if "." not in name and rules.model_class is not None and name == rules.model_class.__name__:
        return rules.model_class
    return None


def _allowed_kind(cls: type, model_class: Optional[type], run_config: bool) -> bool:
    import torch
    from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

    from digitlab.models.registry import model_entries

    if cls is model_class or any(cls is entry.cls for entry in model_entries()):
        return True
    if cls.__module__.startswith("torch.optim") and issubclass(cls, (torch.optim.Optimizer, LRScheduler,
                                                                       ReduceLROnPlateau)):
        return True
    if run_config and cls.__module__.split(".")[0] in ("lightning", "digitlab"):
        from lightning.pytorch import Callback
        from lightning.pytorch.loggers import Logger

        return issubclass(cls, (Callback, Logger))
    return False


def _loaded_class(name: str) -> Optional[type]:
    """The class `name` names among the modules already imported (attributes read without running code)."""
    parts = name.split(".")
    for split in range(len(parts) - 1, 0, -1):
        module = sys.modules.get(".".join(parts[:split]))
        if module is None:
            continue
        found: Any = module
        for part in parts[split:]:
            try:
                found = inspect.getattr_static(found, part)
            except AttributeError:
                return None
        return found if inspect.isclass(found) else None
    return None


def _code_arguments(cls: Optional[type]) -> set[str]:
    """The arguments of `cls` whose type is not plain data: a string given for them is resolved as code."""
    if cls is None:
        return set()
    names: set[str] = set()
    for klass in cls.__mro__[:-1]:  # a subclass passes its own **kwargs on to its bases' arguments
        if "__init__" not in vars(klass):
            continue
        try:
            hints = typing.get_type_hints(klass.__init__)
        except Exception:  # annotations naming what their module did not import: read them as text
            try:
                parameters = inspect.signature(klass.__init__).parameters.values()
            except (TypeError, ValueError):  # a built-in's __init__: no arguments of its own to read
                continue
            hints = {p.name: p.annotation for p in parameters if p.annotation is not p.empty}
        names.update(name for name, hint in hints.items() if name != "return" and not _plain(hint))
    return names


def _plain(annotation: Any) -> bool:
    if isinstance(annotation, str):
        words = re.findall(r"[A-Za-z_]\w*", re.sub(r"(['\"]).*?\1", "", annotation))
        return all(word in PLAIN_WORDS for word in words)
    if annotation in PLAIN_TYPES or annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return True
    if origin in (typing.Union, types.UnionType, list, tuple, dict, set, frozenset, collections.abc.Sequence,
                  collections.abc.Mapping, collections.abc.Iterable):
        return all(arg is Ellipsis or _plain(arg) for arg in typing.get_args(annotation))
    return False


def check_run_config(path: Path, args: list[str]) -> None:
    """Refuse a run's config.yaml that digitlab picked up itself (not named by the user) when it names code
    (`foreign_names`); what the user typed in `args` is their own choice. A file the bounded loader refuses is
    left to the parser, which refuses it too, before importing anything."""
    from digitlab.config.bounded_yaml import UnreadableYaml, load_yaml_file

    try:
        config = load_yaml_file(path, "run config")
    except UnreadableYaml:
        return
    for where, name in foreign_names(config, None, run_config=True, user_names=frozenset(args)):
        if where == "model.class_path" and (package := missing_package(name)):
            raise UserError(f"The run's config {path} names the model {name[:200]}. {how_to_install(package)}")
        raise refusal(f"The run's config {path}, which digitlab uses for this checkpoint,", where, name[:200],
                      "Restore the config the run wrote, or name a config you trust with --config (then it is "
                      "yours, and not checked).")
