"""The arguments a model class takes: its own and, through ``**kwargs``, those of its bases up to `DigitModel`."""

from __future__ import annotations

import inspect


def init_arguments(cls: type) -> list[inspect.Parameter]:
    """The keyword arguments `cls(...)` accepts: its `__init__`'s and, through ``**kwargs``, its bases' up to
    `DigitModel` (a subclass's own argument wins over a base's of the same name)."""
    from digitlab.models import DigitModel

    arguments: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        parameters = list(inspect.signature(klass.__init__).parameters.values())[1:]  # without self
        for parameter in parameters:
            if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY):
                arguments.setdefault(parameter.name, parameter)
        if klass is DigitModel or all(p.kind is not p.VAR_KEYWORD for p in parameters):
            break
    return list(arguments.values())
