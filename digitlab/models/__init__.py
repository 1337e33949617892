"""Digit classifiers and their registry. Every module in this package is imported by the registry; a model
registers itself with `@register_model`, so adding one means adding one file (and a config).

The public API for plugins: `DigitModel` (subclass it), `register_model`, `list_models`, `get_model_entry`,
`get_model_class`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from digitlab.models.base import DigitModel
    from digitlab.models.registry import get_model_class, get_model_entry, list_models, register_model

__all__ = ["DigitModel", "get_model_class", "get_model_entry", "list_models", "register_model"]
_MODULES = {"DigitModel": "digitlab.models.base", **{name: "digitlab.models.registry" for name in __all__[1:]}}


def __getattr__(name: str) -> Any:
    # Imported on first use: the checkpoint reader needs `digitlab.models.arguments`, and `digitlab report`
    # reads checkpoints without Lightning, which `base` imports.
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_MODULES[name]), name)
    globals()[name] = value
    return value
