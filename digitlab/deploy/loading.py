"""A trained model from a checkpoint, ready to predict: what `digitlab export` and `digitlab serve` load.

Safe by construction: the file is read with PyTorch's weights-only unpickler (no code runs), and the model
class it names is used only if it is a registered model (built-in or an installed plugin), so a checkpoint can
never make digitlab import a module. The optimizer and scheduler a checkpoint records are dropped: predicting
needs neither, and their class paths are code to import.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from digitlab.config.import_names import foreign_names, refusal
from digitlab.runs import checkpoints
from digitlab.errors import UserError
from digitlab.models import DigitModel

# Hyperparameters that are not the model's own arguments, or that would import code: never passed on.
NOT_MODEL_ARGUMENTS = ("_class_path", "_instantiator", "optimizer", "lr_scheduler")


@dataclass
class TrainedModel:
    """A model in eval mode, with its weights from `path`, and what the checkpoint says about its training."""

    model: DigitModel
    path: Path
    name: str  # registry name
    data_hyperparameters: dict[str, Any] = field(default_factory=dict)  # the data module's, when training
    about: dict[str, Any] = field(default_factory=dict)  # the file, model, epoch and run (`checkpoints.facts`)

    @property
    def description(self) -> str:
        """The line a command prints about the checkpoint it uses."""
        return checkpoints.sentence(self.about)


def add_checkpoint_arguments(parser: Any) -> None:
    """``--ckpt_path`` and the folder ``last`` looks in, as `digitlab fit|validate|test|predict` take them."""
    parser.add_argument("--ckpt_path", required=True, help="a .ckpt file, a run folder (or version_N: its best "
                        "checkpoint), `last` (the newest run's checkpoints/last.ckpt) or `best` (the newest run's "
                        "best checkpoint by its monitored metric)")
    parser.add_argument("--trainer.default_root_dir", dest="default_root_dir", metavar="DIR",
                        help="where `--ckpt_path last|best` looks: DIR/lightning_logs (default: the current folder)")


def load_model(ckpt_path: str, default_root_dir: Optional[str] = None) -> TrainedModel:
    """The model of a checkpoint (a path, a run folder, ``last`` or ``best`` of the newest run under
    `default_root_dir`'s ``lightning_logs``, as for every other command: `checkpoints.resolve`).

    A missing file, a file that is not a digitlab checkpoint, or a model that is not registered here is a
    `UserError` naming the file and the fix.
    """
    path = Path(checkpoints.resolve(ckpt_path, {"default_root_dir": default_root_dir}))
    checkpoint = checkpoints.load(str(path), weights_only=True, opt_out=False)
    hyperparameters = checkpoints.hyperparameters(str(path), checkpoint)
    entry = _registered_entry(path, hyperparameters.get("_class_path"))
    arguments = {key: value for key, value in hyperparameters.items() if key not in NOT_MODEL_ARGUMENTS}
    for where, name in foreign_names(arguments, entry.cls):
        raise refusal(f"--ckpt_path {path}: its hyperparameters", where, name[:200],
                      "This command loads weights only: use a checkpoint written by `digitlab fit`.")
    checkpoints.check_finite(str(path), checkpoint["state_dict"])
    unbuilt = checkpoints.meta_model(entry.cls, arguments)
    if unbuilt is not None and (problems := checkpoints.fit_problems(checkpoint, unbuilt)):
        raise _does_not_fit(path, entry, "; ".join(problems))
    try:
        model = entry.cls(**arguments)
        model.load_state_dict(checkpoint["state_dict"])
    except UserError:
        raise
    except (TypeError, RuntimeError) as error:  # arguments or weights that do not fit the registered class
        raise _does_not_fit(path, entry, str(error).strip().splitlines()[0]) from None
    model.eval().requires_grad_(False)
    return TrainedModel(model, path, entry.name,
                        checkpoints.hyperparameters(str(path), checkpoint, "datamodule_hyper_parameters"),
                        checkpoints.facts(str(path), checkpoint, entry.name))


def _does_not_fit(path: Path, entry: Any, detail: str) -> UserError:
    return UserError(
        f"--ckpt_path {path} names the model {entry.name} ({entry.class_path}), but its saved arguments or "
        f"weights do not fit that class as installed here: {detail}. Was the model changed since the "
        "checkpoint was written? Use a checkpoint of the installed version, or train again."
    )


def _registered_entry(path: Path, class_path: Any):
    from digitlab.config.import_names import how_to_install, missing_package
    from digitlab.models.registry import model_entries

    entries = model_entries()
    for entry in entries:
        if entry.class_path == class_path:
            return entry
    known = ", ".join(f"{e.name} ({e.class_path})" for e in entries)
    if not class_path:
        what = "does not name its model class (it was not written by `digitlab fit`)"
    elif isinstance(class_path, str) and (package := missing_package(class_path)):
        raise UserError(f"--ckpt_path {path} holds a {class_path} model. {how_to_install(package)}")
    else:
        what = f"holds a {class_path} model, which is not a registered digitlab model"
    raise UserError(
        f"--ckpt_path {path} {what}. Registered models: {known}. A plugin's model needs its package installed "
        "(`digitlab models` lists what is registered); digitlab never imports a module named by a checkpoint."
    )


def model_input(digits: torch.Tensor) -> torch.Tensor:
    """uint8 digits ``[N, 28, 28]`` -> what a model's `forward` takes, as `MNISTDataModule` hands it over."""
    from digitlab.data.mnist import to_model_input

    return to_model_input(digits)
