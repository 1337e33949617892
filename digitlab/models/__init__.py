"""Digit classifiers and their registry. Every module in this package is imported by the registry; a model
registers itself with `@register_model`, so adding one means adding one file (and a config).

The public API for plugins: `DigitModel` (subclass it), `register_model`, `list_models`, `get_model_entry`,
`get_model_class`.
"""

from digitlab.models.base import DigitModel
from digitlab.models.registry import get_model_class, get_model_entry, list_models, register_model

__all__ = ["DigitModel", "get_model_class", "get_model_entry", "list_models", "register_model"]
