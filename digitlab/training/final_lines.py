"""What a run prints when it ends: its accuracy, with the loss and the accuracy of each class on one more line, in
place of Lightning's table of every logged number at full precision; and where the run is, and how to see it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional

from lightning.pytorch import Trainer

from digitlab.runs.layout import RUN_PREFIX

STAGES = {"test": ("Test", "test"), "validate": ("Validation", "val")}
LIMITS = ("limit_train_batches", "limit_val_batches", "limit_test_batches", "overfit_batches")


def evaluation_lines(metrics: Mapping[str, Any], subcommand: str, trainer: Trainer) -> list[str]:
    """The accuracy of a `test` or `validate` (``Test accuracy: 0.9871 on 10000 images``), then its loss and the
    accuracy of each class; a smoke run (fewer batches than the data has) says so."""
    title, prefix = STAGES[subcommand]
    if f"{prefix}/acc" not in metrics:
        return []
    images = f" on {int(metrics[f'{prefix}/images'])} images" if f"{prefix}/images" in metrics else ""
    lines = [f"{title} accuracy: {float(metrics[f'{prefix}/acc']):.4f}{images}{_smoke(trainer)}"]
    details = [f"loss {float(metrics[f'{prefix}/loss']):.4f}"] if f"{prefix}/loss" in metrics else []
    classes = sorted((int(key.rsplit("_", 1)[1]), float(value)) for key, value in metrics.items()
                     if key.startswith(f"{prefix}/acc_class_"))
    if classes:
        details.append("per class " + "  ".join(f"{digit}: {value:.3f}" for digit, value in classes))
    return lines + (["  " + " · ".join(details)] if details else [])


def where_lines(folder: Optional[Path], subcommand: str) -> list[str]:
    """Where the run's logs are, and the command that shows them."""
    if folder is None:
        return []
    inside_a_run = subcommand != "fit" and folder.parent.name.startswith(RUN_PREFIX)  # version_3/test_0
    logs = folder.parent.parent if inside_a_run else folder.parent
    return [f"Run folder: {_shown(folder)}  (see it: tensorboard --logdir {_shown(logs)})"]


def _shown(path: Path) -> str:
    """`path` relative to the working folder when it is inside it (as the user typed it, most often)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _smoke(trainer: Trainer) -> str:
    if trainer.fast_dev_run:
        return " (a smoke run, fast_dev_run: not a measure of the model)"
    limited = [f"{name}={getattr(trainer, name)}" for name in LIMITS if getattr(trainer, name, 1.0) not in (1.0, 0.0)]
    return f" (a smoke run, {', '.join(limited)}: not a measure of the model)" if limited else ""
