"""The on-disk contract of a run: every name in a run folder, where the runs of a config live, and which run
``--ckpt_path last`` and ``--ckpt_path best`` mean (the newest run: its last.ckpt, and its best checkpoint by the
monitored metric, which `digitlab.runs.checkpoints.best_checkpoint` reads from the run's checkpoint). Read by the code that writes runs and the code that reads them (the report, which
imports no Lightning: nor does this module).

    lightning_logs/                   LOGS_FOLDER, under trainer.default_root_dir (or the logger's save_dir/name)
      version_N/                      RUN_PREFIX: one fit (version_{job id} under SLURM)
        config.yaml  hparams.yaml     RUN_CONFIG, HPARAMS
        .lock  launch                 LOCK_FILE (held while a job writes here), LAUNCH_FILE (under torchrun)
        events.out.tfevents.*         EVENTS (TensorBoard) or metrics.csv (METRICS_CSV, Lightning's CSVLogger)
        checkpoints/last.ckpt         CHECKPOINTS, LAST_CHECKPOINT; best-epoch=NN.ckpt (BEST_PREFIX)
        test_K/  validate_K/                an evaluation of this run's checkpoint (EVALUATION_FOLDER)
      sweeps/NAME/trial_N/            SWEEPS, TRIAL_PREFIX: one sweep trial, a run like version_N
      lr_find/version_N/              LR_FIND: one `digitlab lr_find` (config.yaml, lr_find.png, events)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional

from digitlab.errors import UserError

LOGS_FOLDER = "lightning_logs"
RUN_PREFIX = "version_"
RUN_CONFIG = "config.yaml"
HPARAMS = "hparams.yaml"
EVENTS = "events.out.tfevents.*"
METRICS_CSV = "metrics.csv"
CHECKPOINTS = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
LOCK_FILE = ".lock"  # `digitlab.runs.ownership`
LAUNCH_FILE = "launch"  # `digitlab.runs.restarts`
BEST_PREFIX = "best-"
SWEEPS = "sweeps"
TRIAL_PREFIX = "trial_"
LR_FIND = "lr_find"
EVALUATION_SUBCOMMANDS = ("validate", "test", "predict")
EVALUATION_FOLDER = re.compile(rf"({'|'.join(EVALUATION_SUBCOMMANDS)})_(\d+)")
# What every run writes as it starts, before any training (a refused run holding only these is discarded).
RUN_START_FILES = (EVENTS, HPARAMS, RUN_CONFIG, METRICS_CSV, LOCK_FILE, LAUNCH_FILE)
OWN_MARKERS = (LOCK_FILE, LAUNCH_FILE)  # what digitlab writes into a run folder as it claims it

TENSORBOARD_CLASS_PATHS = ("lightning.pytorch.loggers.TensorBoardLogger",
                           "lightning.pytorch.loggers.tensorboard.TensorBoardLogger")


def logger_specs(spec: Any, default_root_dir: str) -> list[dict[str, Any]]:
    """The trainer's ``logger`` setting as ``{class_path, init_args}`` dicts: Lightning's default (`None` or
    `True`) is one TensorBoard logger in ``default_root_dir/lightning_logs``; `False` is none."""
    if spec is False:
        return []
    if spec is None or spec is True:
        init_args = {"save_dir": default_root_dir, "name": LOGS_FOLDER, "version": None}
        return [{"class_path": TENSORBOARD_CLASS_PATHS[0], "init_args": init_args}]
    specs = spec if isinstance(spec, list) else [spec]
    return [s.as_dict() if hasattr(s, "as_dict") else dict(s) for s in specs]


def writes_run_folder(spec: dict[str, Any]) -> bool:
    """Whether a logger writes a ``save_dir/name/version`` folder (TensorBoard, CSV) and its version is unset,
    so that digitlab chooses the run folder for it."""
    init_args = spec.get("init_args") or {}
    return {"save_dir", "name", "version"} <= set(init_args) and init_args.get("version") is None


def logs_root(trainer_config: Any) -> Path:
    """The folder holding the runs (``version_N``) of a trainer config: ``default_root_dir/lightning_logs``
    (``./lightning_logs`` by default); with loggers configured, the first file logger's ``save_dir/name``."""
    default_root_dir = str(trainer_config.get("default_root_dir") or ".")
    for spec in logger_specs(trainer_config.get("logger"), default_root_dir):
        init_args = spec.get("init_args") or {}
        if "save_dir" in init_args:
            return Path(init_args["save_dir"] or default_root_dir) / (init_args.get("name", LOGS_FOLDER) or "")
    return Path(default_root_dir) / LOGS_FOLDER


def sweeps_root(trainer_config: Any) -> Path:
    """Where the sweeps of a run config live: ``lightning_logs/sweeps`` beside its runs."""
    return logs_root(trainer_config) / SWEEPS


CHECKPOINT_KEYWORDS = ("last", "best")  # --ckpt_path's words for the newest run's checkpoints
RUN_NAME = re.compile(rf"{RUN_PREFIX}\d+")


def newest_last_checkpoint(root: Path, keyword: str = "last") -> Path:
    """What ``--ckpt_path last`` means: the most recently written ``version_*/checkpoints/last.ckpt`` under
    `root` (`logs_root` of the command's config). Its run is the newest run, the one ``best`` reads too."""
    candidates = sorted(root.glob(f"{RUN_PREFIX}*/{CHECKPOINTS}/{LAST_CHECKPOINT}"), key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise UserError(
            f"--ckpt_path {keyword}: no run under {root} has a {CHECKPOINTS}/{LAST_CHECKPOINT}. Give the path of a "
            "checkpoint instead (or, to train afresh, leave --ckpt_path out)."
        )
    return candidates[-1]


def newest_run(root: Path, keyword: str = "last") -> Path:
    """The run ``--ckpt_path last`` and ``--ckpt_path best`` read: the folder of `newest_last_checkpoint`."""
    return newest_last_checkpoint(root, keyword).parent.parent


def named_run(name: str, root: Path) -> Optional[Path]:
    """The run folder `name` names as ``--ckpt_path``: a folder holding ``checkpoints/``, or ``version_N`` of
    `root` (the command's runs); None when it names no run."""
    path = Path(name)
    if not path.exists() and RUN_NAME.fullmatch(name):
        path = root / name
    return path if (path / CHECKPOINTS).is_dir() else None


def best_files(run: Path) -> list[Path]:
    """The run's own ``checkpoints/best-*.ckpt`` files (a monitored ModelCheckpoint's, as configs/ name them)."""
    return sorted((run / CHECKPOINTS).glob(f"{BEST_PREFIX}*.ckpt"))


def run_folder_of(ckpt_path: str) -> Optional[Path]:
    """The run folder a checkpoint belongs to (``.../version_N`` for ``.../version_N/checkpoints/x.ckpt``)."""
    folder = Path(ckpt_path).resolve().parent
    if folder.name != CHECKPOINTS:
        return None
    run = folder.parent
    return run if (run / RUN_CONFIG).is_file() or any(run.glob(EVENTS)) else None
