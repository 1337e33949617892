"""Checkpoints for the export and serve tests: a built-in model trained for one epoch on tiny synthetic MNIST
files by `digitlab fit` (in this process), once per test session; and hand-written checkpoint files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from conftest import write_mnist_like
from test_cli import QUIET, SYNTHETIC

_trained: dict[str, Path] = {}


def synthetic_checkpoint(model: str, root: Path) -> Path:
    """`model` trained one epoch on 400 synthetic images; the checkpoint `digitlab fit` wrote (cached)."""
    if model not in _trained:
        from digitlab.training.run import main as run

        folder = root / f"fit-{model}"
        data = write_mnist_like(folder / "data", train=400, test=100)
        run(["fit", "--model", model, "--data.data_dir", str(data), *SYNTHETIC, *QUIET, "--seed_everything", "0",
             "--trainer.max_epochs", "1", "--trainer.logger", "false", "--trainer.default_root_dir", str(folder),
             "--test_after_fit", "false", "--pictures", "false"])
        _trained[model] = next((folder / "checkpoints").glob("*.ckpt"))
    return _trained[model]


def write_checkpoint(path: Path, class_path: Any, state_dict: dict, **hyperparameters: Any) -> Path:
    """A checkpoint file with only what digitlab reads: the weights and the hyperparameters (with the class)."""
    torch.save({"state_dict": state_dict, "hyper_parameters": {"_class_path": class_path, **hyperparameters}}, path)
    return path
