"""The model registry: lower-case names for `DigitModel` classes, built-in or from plugins.

Built-in models are the modules of `digitlab.models` (each registers itself with `@register_model`);
third-party models come from the entry-point group ``digitlab.models``. Names are case-insensitive.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import os
import pkgutil
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Callable, Iterator, TypeVar

from digitlab.errors import DuplicateModelError, UnknownModelError

ENTRY_POINT_GROUP = "digitlab.models"
DISABLE_PLUGINS_ENV = "DIGITLAB_DISABLE_PLUGINS"
BUILTIN_SOURCE = "built-in"

T = TypeVar("T", bound=type)


@dataclass(frozen=True)
class ModelEntry:
    name: str
    cls: type
    source: str  # "built-in" or the distribution name of the plugin that provides the model

    @property
    def class_path(self) -> str:
        return f"{self.cls.__module__}.{self.cls.__qualname__}"

    @property
    def description(self) -> str:
        doc = (self.cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""


_registry: dict[str, ModelEntry] = {}
_current_source = BUILTIN_SOURCE
_discovered = False


def _same_class(a: type, b: type) -> bool:
    # A module imported twice (for example by a reload) re-creates the class object.
    return a is b or (a.__module__, a.__qualname__) == (b.__module__, b.__qualname__)


def register_model(name: str | None = None) -> Callable[[T], T]:
    """Class decorator that registers a model under `name` (default: the class name), case-insensitively."""

    def decorator(cls: T) -> T:
        _add(ModelEntry((name or cls.__name__).lower(), cls, _current_source))
        return cls

    return decorator


def _add(entry: ModelEntry) -> None:
    known = _registry.get(entry.name)
    if known is not None and not _same_class(known.cls, entry.cls):
        raise DuplicateModelError(
            f"Two models claim the name '{entry.name}': {known.class_path} (from {known.source}) and "
            f"{entry.class_path} (from {entry.source}). Uninstall one of the packages, or register one "
            "of the classes under another name."
        )
    _registry[entry.name] = entry


def list_models(pattern: str | None = None) -> list[str]:
    """Sorted registry names, optionally filtered by a shell-style pattern such as ``"lenet*"``."""
    discover_models()
    names = sorted(_registry)
    return [n for n in names if fnmatch.fnmatch(n, pattern.lower())] if pattern else names


def model_entries() -> list[ModelEntry]:
    discover_models()
    return [_registry[n] for n in sorted(_registry)]


def get_model_entry(name: str) -> ModelEntry:
    """The entry for a registry name or a class name, both case-insensitive."""
    discover_models()
    key = name.lower()
    if key in _registry:
        return _registry[key]
    for entry in _registry.values():
        if entry.cls.__name__.lower() == key:
            return entry
    close = difflib.get_close_matches(key, list(_registry), n=1, cutoff=0.5)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise UnknownModelError(
        f"Unknown model '{name}'.{hint} Known models: {', '.join(sorted(_registry))}. "
        "Run `digitlab models` to see them with descriptions, or give a full class path "
        "such as 'mypackage.models.MyNet'."
    )


def get_model_class(name: str) -> type:
    """The class registered under `name` (a registry name or a class name, case-insensitive)."""
    return get_model_entry(name).cls


def discover_models() -> None:
    """Import the built-in model modules and, unless disabled, the plugins' entry points (once)."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    _import_builtin_models()
    if os.environ.get(DISABLE_PLUGINS_ENV, "").strip().lower() not in ("", "0", "false", "no"):
        return
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        _load_plugin(entry_point)


def _import_builtin_models() -> None:
    import digitlab.models as package

    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{module.name}")


@contextmanager
def _registering_for(source: str) -> Iterator[None]:
    global _current_source
    previous, _current_source = _current_source, source
    try:
        yield
    finally:
        _current_source = previous


def _load_plugin(entry_point) -> None:
    source = entry_point.dist.name if entry_point.dist is not None else entry_point.value
    try:
        with _registering_for(source):
            cls = entry_point.load()
    except DuplicateModelError:
        raise
    except Exception as error:  # a broken plugin must not take the CLI down with it
        warnings.warn(
            f"digitlab: skipped the model plugin '{entry_point.name}' ({entry_point.value}) from "
            f"{source}: {type(error).__name__}: {error}. Set {DISABLE_PLUGINS_ENV}=1 to skip all plugins.",
            stacklevel=2,
        )
        return
    _add(ModelEntry(entry_point.name.lower(), cls, source))
