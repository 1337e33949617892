"""Digit classifiers. Every module in this package is imported by the registry; a model registers
itself with `@register_model`, so adding one means adding one file (and a config)."""

from digitlab.models.base import DigitModel

__all__ = ["DigitModel"]
