"""The model registry: lower-case names for `DigitModel` classes, built-in or from plugins.

Built-in models are the modules of `digitlab.models`, all imported at discovery (each registers itself
with `@register_model`, so a new model is a new file and nothing else); third-party models come from the
entry-point group ``digitlab.models`` of installed distributions. Names are case-insensitive.
"""

from __future__ import annotations

import fnmatch
import importlib
import inspect
import os
import pkgutil
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Callable, Iterator, TypeVar

from digitlab.errors import DuplicateModelError, PluginWarning, UnknownModelError
from digitlab.models.base import DigitModel
from digitlab.utils.text import closest, did_you_mean

ENTRY_POINT_GROUP = "digitlab.models"
DISABLE_PLUGINS_ENV = "DIGITLAB_DISABLE_PLUGINS"
BUILTIN_SOURCE = "built-in"

T = TypeVar("T", bound=type)


@dataclass(frozen=True)
class ModelEntry:
    name: str
    cls: type
    source: str  # "built-in", the distribution name of the plugin, or else the class's top-level module

    @property
    def class_path(self) -> str:
        return f"{self.cls.__module__}.{self.cls.__qualname__}"

    @property
    def description(self) -> str:
        doc = (self.cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""


_registry: dict[str, ModelEntry] = {}
_current_source: str | None = None  # the distribution whose entry point is being loaded
_discovered = False


def _same_class(a: type, b: type) -> bool:
    # A module imported twice (for example by a reload) re-creates the class object.
    return a is b or (a.__module__, a.__qualname__) == (b.__module__, b.__qualname__)


def register_model(name: str | None = None) -> Callable[[T], T]:
    """Class decorator that registers a model under `name` (default: the class name), case-insensitively."""

    def decorator(cls: T) -> T:
        package = cls.__module__.partition(".")[0]
        source = _current_source or (BUILTIN_SOURCE if package == "digitlab" else package)
        _add(ModelEntry((name or cls.__name__).lower(), cls, source))
        return cls

    return decorator


def _add(entry: ModelEntry) -> None:
    if not (isinstance(entry.cls, type) and issubclass(entry.cls, DigitModel)):
        kind = "" if isinstance(entry.cls, type) else f" (it is a {type(entry.cls).__name__})"
        name = getattr(entry.cls, "__qualname__", repr(entry.cls))
        raise TypeError(f"{name} is not a subclass of digitlab.models.DigitModel{kind}")
    if inspect.isabstract(entry.cls):
        missing = ", ".join(sorted(entry.cls.__abstractmethods__))
        raise TypeError(f"{entry.class_path} is abstract: it does not implement {missing}")
    known = _registry.get(entry.name)
    if known is not None and not _same_class(known.cls, entry.cls):
        raise DuplicateModelError(
            f"Two models claim the name '{entry.name}': {known.class_path} from {_package(known)} and "
            f"{entry.class_path} from {_package(entry)}. Uninstall one of the packages, or rename one of "
            f"the models (its entry-point name or `@register_model` name); {DISABLE_PLUGINS_ENV}=1 "
            "skips all plugins."
        )
    _registry[entry.name] = entry  # the same class again: an entry point names the package it came from


def _package(entry: ModelEntry) -> str:
    return "digitlab (built-in)" if entry.source == BUILTIN_SOURCE else f"the package '{entry.source}'"


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
    hint = did_you_mean(closest(key, _registry, cutoff=0.5))
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
    """Register one entry point's class; if that fails, warn and leave the registry as it was."""
    source = entry_point.dist.name if entry_point.dist is not None else entry_point.module
    before = dict(_registry)
    try:
        with _registering_for(source):
            _add(ModelEntry(entry_point.name.lower(), entry_point.load(), source))
    except DuplicateModelError:
        raise
    except Exception as error:  # a broken plugin must not take the CLI down with it
        _registry.clear()
        _registry.update(before)  # nor leave behind classes from a module that failed half-way
        warnings.warn(
            f"skipped the model plugin '{entry_point.name}' ({entry_point.value}) from the package "
            f"'{source}': {type(error).__name__}: {error}. Set {DISABLE_PLUGINS_ENV}=1 to skip all plugins.",
            PluginWarning,
            stacklevel=3,
        )
