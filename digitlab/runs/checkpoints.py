"""Which checkpoint `--ckpt_path` means, and whether it fits the configured model — before any run starts."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Optional

import torch

from digitlab.errors import UserError
from digitlab.runs import layout
from digitlab.models.arguments import init_arguments

LIGHTNING_KEYWORDS = ("best", "hpc", "registry")  # Lightning's: they need state a new process does not have


def resolve(ckpt_path: Optional[str], trainer_config: Any) -> Optional[str]:
    """`ckpt_path` as a file path: ``last`` becomes the newest ``last.ckpt`` of the runs; a missing file fails."""
    if ckpt_path is None:
        return None
    if ckpt_path in LIGHTNING_KEYWORDS:
        raise UserError(
            f"--ckpt_path {ckpt_path}: digitlab takes the path of a checkpoint file, or `last` for the newest run's "
            "last.ckpt (a run's best checkpoint is in its checkpoints/ folder, named best-*.ckpt)."
        )
    if ckpt_path == "last":
        return str(layout.newest_last_checkpoint(layout.logs_root(trainer_config)))
    path = Path(ckpt_path)
    if path.is_dir():
        found = sorted(path.glob("**/*.ckpt"))
        hint = f" It holds {len(found)} checkpoint(s), e.g. {found[0]}." if found else ""
        raise UserError(f"--ckpt_path {ckpt_path} is a folder, not a checkpoint file.{hint} Give the path of one "
                        "checkpoint file, or `--ckpt_path last` for the newest last.ckpt.")
    if not path.is_file():
        raise UserError(
            f"--ckpt_path {ckpt_path}: no such file. Checkpoints are in {layout.LOGS_FOLDER}/{layout.RUN_PREFIX}N/"
            f"{layout.CHECKPOINTS}/; "
            "`--ckpt_path last` picks the newest last.ckpt."
        )
    return ckpt_path


def load(ckpt_path: str, weights_only: Optional[bool], opt_out: bool = True) -> dict[str, Any]:
    """Read a Lightning checkpoint, weights-only unless `weights_only` is False; refuse anything else.
    `opt_out`: whether the command offers ``--weights_only false`` (said in the refusal)."""
    try:
        checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=weights_only is not False, mmap=True)
    except pickle.UnpicklingError as error:
        fix = ("Only if you trust where it comes from, add `--weights_only false`." if opt_out else
               "This command loads weights only: use a checkpoint written by `digitlab fit`.")
        raise UserError(
            f"--ckpt_path {ckpt_path}: weights-only loading refuses it ({str(error).splitlines()[0]}). It holds "
            f"Python objects that run code when loaded. {fix}"
        ) from None
    except Exception as error:
        raise UserError(f"--ckpt_path {ckpt_path} is not a readable checkpoint: {type(error).__name__}: "
                        f"{str(error)[:300]}") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise UserError(f"--ckpt_path {ckpt_path} is not a Lightning checkpoint (it has no state_dict).")
    return checkpoint


def check_restorable(ckpt_path: str, checkpoint: dict[str, Any]) -> None:
    """Refuse a checkpoint that Lightning's Trainer cannot restore (one not written by a Trainer)."""
    if "pytorch-lightning_version" not in checkpoint:
        raise UserError(
            f"--ckpt_path {ckpt_path} holds a state_dict but is not a Lightning checkpoint (no "
            "pytorch-lightning_version): it was not written by a Lightning Trainer. Use a checkpoint from a run's "
            "checkpoints/ folder."
        )


def model_hyperparameters(ckpt_path: str, checkpoint: dict[str, Any], model_class: type) -> dict[str, Any]:
    """The checkpoint's model hyperparameters, checked to be safe and to fit `model_class` (the configured
    model): ``{class_path, init_args}`` for the config, or ``{}`` when the checkpoint has none.

    A checkpoint is data, never code: LightningCLI would merge its hyperparameters into the config, and
    jsonargparse imports every class path it meets, so a checkpoint could name any module to import. Here
    the model's class path must be the configured model's, and every other class path (optimizers,
    schedulers) must come from `torch.optim`.
    """
    hparams = dict(checkpoint.get("hyper_parameters") or {})
    hparams.pop("_instantiator", None)
    saved_class = hparams.pop("_class_path", None)
    class_path = f"{model_class.__module__}.{model_class.__qualname__}"
    if saved_class is not None and saved_class != class_path:
        raise UserError(
            f"--ckpt_path {ckpt_path} holds a {saved_class} model, but the config asks for {class_path}. Use the "
            "config the checkpoint was trained with (its run folder has it as config.yaml), or another checkpoint."
        )
    for name, value in hparams.items():
        for named in _class_paths(value):
            if not named.startswith(SAFE_CLASS_PATH_PREFIX):
                raise UserError(
                    f"--ckpt_path {ckpt_path}: its hyperparameter '{name}' names the class {named}, and digitlab "
                    f"imports no class a checkpoint names unless it comes from {SAFE_CLASS_PATH_PREFIX.rstrip('.')} "
                    "(a checkpoint is data, not code). Use a checkpoint written by digitlab."
                )
    accepted = {parameter.name for parameter in init_arguments(model_class)}
    unknown = sorted(set(hparams) - accepted)
    if unknown:
        raise UserError(
            f"--ckpt_path {ckpt_path} has the hyperparameter(s) {', '.join(unknown)}, which {model_class.__name__} "
            "does not take: it was written by another version of the model. Use a checkpoint of this version."
        )
    return {"class_path": class_path, "init_args": hparams} if hparams else {}


def check_fits(ckpt_path: str, checkpoint: dict[str, Any], model: torch.nn.Module) -> None:
    """Refuse a checkpoint whose weights do not have the names and shapes of `model`'s."""
    saved = {key: tuple(value.shape) for key, value in checkpoint["state_dict"].items() if hasattr(value, "shape")}
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    problems = []
    if missing := sorted(expected.keys() - saved.keys()):
        problems.append(f"missing {_few(missing)}")
    if unexpected := sorted(saved.keys() - expected.keys()):
        problems.append(f"unexpected {_few(unexpected)}")
    if resized := sorted(k for k in expected.keys() & saved.keys() if expected[k] != saved[k]):
        problems.append("other shapes for " + _few([f"{k} {saved[k]} (expected {expected[k]})" for k in resized]))
    if problems:
        raise UserError(
            f"--ckpt_path {ckpt_path} does not hold weights of the configured {type(model).__name__}: "
            f"{'; '.join(problems)}. Use the config the checkpoint was trained with (its run folder has it as "
            "config.yaml), or another checkpoint."
        )


SAFE_CLASS_PATH_PREFIX = "torch.optim."


def _class_paths(value: Any) -> list[str]:
    """Every ``class_path`` inside a (nested) hyperparameter value."""
    if isinstance(value, dict):
        own = [str(value["class_path"])] if "class_path" in value else []
        return own + [path for item in value.values() for path in _class_paths(item)]
    if isinstance(value, (list, tuple)):
        return [path for item in value for path in _class_paths(item)]
    return []


def _few(items: list[str], shown: int = 3) -> str:
    more = f" and {len(items) - shown} more" if len(items) > shown else ""
    return ", ".join(items[:shown]) + more
