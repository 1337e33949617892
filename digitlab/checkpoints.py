"""Which checkpoint `--ckpt_path` means, and whether it fits the configured model — before any run starts."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Optional

import torch

from digitlab.errors import UserError

LIGHTNING_KEYWORDS = ("best", "hpc", "registry")  # resolved by Lightning itself


def logs_root(trainer_config: Any) -> Path:
    """The folder holding the runs (``version_N``) for a trainer config: default ``./lightning_logs``."""
    root = Path(trainer_config.get("default_root_dir") or ".")
    logger = trainer_config.get("logger")
    if isinstance(logger, dict) or hasattr(logger, "get"):
        init_args = logger.get("init_args") or {}
        return Path(init_args.get("save_dir") or root) / (init_args.get("name") or "lightning_logs")
    return root / "lightning_logs"


def newest_last_checkpoint(root: Path) -> Path:
    """The most recently written ``version_*/checkpoints/last.ckpt`` under `root`."""
    candidates = sorted(root.glob("version_*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise UserError(
            f"--ckpt_path last: no run under {root} has a checkpoints/last.ckpt to resume from. Give the path "
            "of a checkpoint instead, or leave --ckpt_path out to start afresh."
        )
    return candidates[-1]


def resolve(ckpt_path: Optional[str], trainer_config: Any) -> Optional[str]:
    """`ckpt_path` as a file path: ``last`` becomes the newest ``last.ckpt`` of the runs; a missing file fails."""
    if ckpt_path is None or ckpt_path in LIGHTNING_KEYWORDS:
        return ckpt_path
    if ckpt_path == "last":
        return str(newest_last_checkpoint(logs_root(trainer_config)))
    if not Path(ckpt_path).is_file():
        raise UserError(
            f"--ckpt_path {ckpt_path}: no such file. Checkpoints are in lightning_logs/version_N/checkpoints/; "
            "`--ckpt_path last` picks the newest last.ckpt."
        )
    return ckpt_path


def check_model(ckpt_path: str, class_path: Optional[str], weights_only: Optional[bool]) -> None:
    """Refuse a checkpoint that is not a checkpoint, or that holds another model than the config names."""
    try:
        checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=weights_only is not False)
    except pickle.UnpicklingError as error:
        raise UserError(
            f"--ckpt_path {ckpt_path}: weights-only loading refuses it ({str(error).splitlines()[0]}). It holds "
            "Python objects that run code when loaded. Only if you trust where it comes from, add "
            "`--weights_only false`."
        ) from None
    except Exception as error:
        raise UserError(f"--ckpt_path {ckpt_path} is not a readable checkpoint: {type(error).__name__}: {error}")
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise UserError(f"--ckpt_path {ckpt_path} is not a Lightning checkpoint (it has no state_dict).")
    saved = checkpoint.get("hyper_parameters", {}).get("_class_path")
    if class_path and saved and saved != class_path:
        raise UserError(
            f"--ckpt_path {ckpt_path} holds a {saved} model, but the config asks for {class_path}. Use the "
            "config the checkpoint was trained with (its run folder has it as config.yaml), or another checkpoint."
        )
