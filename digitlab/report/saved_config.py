"""A run's config.yaml: its model, lr and batch size, and the checkpoint an evaluation evaluated."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Optional

from digitlab.config.bounded_yaml import UnreadableYaml, load_yaml_file
from digitlab.errors import SkippedFileWarning
from digitlab.report.run import Run


def read_config(path: Path, run: Run) -> Optional[str]:
    """Model, lr and batch size from the run's config.yaml, and its ``ckpt_path`` (returned); left blank, with
    a warning, if it is not one."""
    if not path.is_file():
        return None
    try:
        config = load_yaml_file(path, "run config")
        run.model, run.lr, run.batch_size = _config_columns(config)
    except UnreadableYaml as error:
        _warn_config(path, f"not a readable config (it {error.reason})")
    except ValueError as error:
        _warn_config(path, str(error))
    else:
        ckpt_path = config.get("ckpt_path") if isinstance(config, dict) else None
        return ckpt_path if isinstance(ckpt_path, str) else None
    return None


def _config_columns(config: Any) -> tuple[Optional[str], Optional[float], Optional[int]]:
    """(model class name, lr, batch size) of a saved config; ValueError for a config not shaped like one."""
    config = _mapping(config, "the config")
    model = config.get("model")
    model = {"class_path": model} if isinstance(model, str) else _mapping(model, "its model section")
    class_path = model.get("class_path")
    if class_path is not None and not isinstance(class_path, str):
        raise ValueError(f"its model.class_path is {_short(class_path)}, not a name")
    init_args = _mapping(model.get("init_args"), "its model.init_args")
    optimizer = init_args.get("optimizer")
    optimizer = optimizer if isinstance(optimizer, dict) else {}  # a class path alone holds no lr
    optimizer_args = _mapping(optimizer.get("init_args"), "its optimizer's init_args")
    lr = _number(init_args.get("lr", optimizer_args.get("lr")), "lr", float)
    batch_size = _number(_mapping(config.get("data"), "its data section").get("batch_size"), "data.batch_size", int)
    return (class_path.rsplit(".", 1)[-1] if class_path else None), lr, batch_size


def _mapping(value: Any, what: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{what} is {_short(value)}, not a mapping of settings")
    return value


def _number(value: Any, name: str, kind: type) -> Any:
    """`value` as a `kind` number; PyYAML reads ``1e-3`` (no dot) as a string, which is converted here."""
    if value is None:
        return None
    try:
        if isinstance(value, bool):
            raise ValueError
        number = kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"its {name} is not a number: {_short(value)}") from None
    if kind is int and isinstance(value, float) and value != number:
        raise ValueError(f"its {name} is not a whole number: {value!r}")
    return number


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "…"


def _warn_config(path: Path, why: str) -> None:
    warnings.warn(f"{path}: {why}; its model, lr and batch size are left blank", SkippedFileWarning, stacklevel=2)
