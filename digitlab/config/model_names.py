"""Registry names -> full class paths, before jsonargparse parses anything.

jsonargparse understands ``--model LeNet5`` (a class name) and full class paths, not the registry's
lower-case names. Rewriting them up front — on the command line and in YAML — means every parsed and
saved config holds full class paths and replays anywhere.
"""

from __future__ import annotations

from typing import Any

import yaml
from jsonargparse import get_loader, set_loader

from digitlab.config.bounded_yaml import check_size, check_unique_keys
from digitlab.models.registry import get_model_entry

MODEL_FLAGS = ("--model", "--model.class_path", "--model.help")
YAML_MODE = "digitlab_yaml"


def resolve_model_name(name: Any) -> Any:
    """A registry or class name becomes a full class path; anything else (full paths, dicts) is left alone."""
    if isinstance(name, str) and name and "." not in name and not name.lstrip().startswith(("{", "[")):
        return get_model_entry(name).class_path
    return name


def rewrite_model_args(args: list[str]) -> list[str]:
    """Rewrite ``--model NAME``, ``--model=NAME``, ``--model.help NAME`` and ``--model.class_path NAME``."""
    rewritten = list(args)
    for i, arg in enumerate(rewritten):
        flag, equals, value = arg.partition("=")
        if flag not in MODEL_FLAGS:
            continue
        if equals:
            rewritten[i] = f"{flag}={resolve_model_name(value)}"
        elif i + 1 < len(rewritten):
            rewritten[i + 1] = resolve_model_name(rewritten[i + 1])
    return rewritten


def rewrite_model_config(config: Any) -> Any:
    """Rewrite ``model: NAME`` and ``model: {class_path: NAME, ...}`` in a loaded config mapping."""
    if isinstance(config, dict) and "model" in config:
        model = config["model"]
        if isinstance(model, dict) and "class_path" in model:
            config["model"] = {**model, "class_path": resolve_model_name(model["class_path"])}
        else:
            config["model"] = resolve_model_name(model)
    return config


def register_yaml_loader() -> None:
    """Parser mode ``digitlab_yaml``: jsonargparse's own YAML loader, then registry names rewritten; a document
    that would expand beyond a sane size is refused before it is loaded (`digitlab.config.bounded_yaml`)."""
    yaml_load = get_loader("yaml")

    def load(text: str) -> Any:
        check_size(text)
        check_unique_keys(text)
        return rewrite_model_config(yaml_load(text))

    set_loader(YAML_MODE, load, exceptions=(yaml.YAMLError,))
