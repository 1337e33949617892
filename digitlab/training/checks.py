"""Settings that Lightning rejects only once the run is under way, or with a traceback: checked before a run
starts, each as one paragraph. Lightning's own refusals are translated in one place (`lightning_refusal`)."""

from __future__ import annotations

import math
import os
import re
import warnings
from pathlib import Path
from types import TracebackType
from typing import Any, Iterator, Optional

from jsonargparse import Namespace
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import Trainer
from lightning.pytorch.accelerators import CPUAccelerator

from digitlab.config.option_checks import RUN, refusal
from digitlab.errors import RunWarning, UserError, causes

MIN_CPU_PROCESSES = 4  # DDP on CPU processes is allowed up to max(this, the number of cores)
LIGHTNING_ERRORS = (MisconfigurationException, ValueError, ImportError)  # how Lightning refuses a setting
# ...and, while it makes the trainer (which only checks settings), as RuntimeError: two callbacks of one kind
# whose states would collide.
CONSTRUCTION_ERRORS = (*LIGHTNING_ERRORS, RuntimeError)
LIGHTNING_PACKAGES = {"lightning", "lightning_fabric", "lightning_utilities", "pytorch_lightning"}
# How torch says a tensor is too large to make: no memory for it, or a size beyond what it can count.
TOO_LARGE = re.compile(r"can't allocate memory|integer multiplication overflow|out of memory", re.IGNORECASE)


def check_config(config: Any) -> None:
    """What can be refused from the config alone, before anything is made."""
    check_numbers(config)
    root = config.trainer.get("default_root_dir")
    if root and Path(root).exists() and not Path(root).is_dir():
        raise UserError(f"trainer.default_root_dir={root} is a file, not a folder: runs and checkpoints are written "
                        "under it. Give a folder (it is created if needed).")


def check_numbers(config: Any) -> None:
    """Every float in the config finite, and the numbers of `OPTIONS`' ``RUN`` entries in their range."""
    for key, value in _numbers(config):
        reason = refusal(RUN, key, value, f"{key}={value}")
        if reason:
            raise UserError(f"{reason} Fix it in the config or with `--{key}`.")


def _numbers(value: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, number) for every int and float in `value`, nested lists and mappings included."""
    if isinstance(value, Namespace):
        value = vars(value)
    if isinstance(value, dict):
        for name, item in value.items():
            yield from _numbers(item, f"{key}.{name}" if key else str(name))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _numbers(item, f"{key}[{index}]")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield key, value


def nonfinite_option(args: list[str], subcommand: str) -> Optional[str]:
    """The refusal of the first ``--key nan`` (or inf, -inf, 1e400) in `args`, which jsonargparse refuses
    without a reason for some keys; None if there is none."""
    for flag, value in [*zip(args, args[1:]), *(arg.partition("=")[::2] for arg in args if "=" in arg)]:
        if not flag.startswith("--"):
            continue
        try:
            number = float(value.strip().lstrip(".").replace("-.", "-"))
        except ValueError:
            continue
        if not math.isfinite(number):
            return (f"{flag} {value} is not valid: NaN and infinities are refused; give a finite number. "
                    f"`digitlab {subcommand} --help` describes the options.")
    return None


def check_trainer(trainer: Trainer, val_split: Any) -> None:
    """What can be refused once the trainer and its callbacks exist, before they run."""
    limit = max(MIN_CPU_PROCESSES, os.cpu_count() or 1)
    if isinstance(trainer.accelerator, CPUAccelerator) and trainer.num_devices > limit:
        # CPU "devices" are processes, each with a copy of the model and data: a typo such as 64 would exhaust
        # the machine's memory. A few more than the cores is fine for trying DDP out.
        raise UserError(
            f"trainer.devices={trainer.num_devices} on the CPU would start {trainer.num_devices} processes per node, "
            f"more than this machine can hold (at most {limit}: its {os.cpu_count()} cores, or {MIN_CPU_PROCESSES}). "
            "Use fewer devices (`--config configs/trainer/cpu_ddp.yaml` runs 2), or run on GPUs."
        )
    if val_split == 0:
        for callback in trainer.callbacks:
            monitor = getattr(callback, "monitor", None)
            if isinstance(monitor, str) and monitor.startswith("val/"):
                raise UserError(
                    f"The callback {type(callback).__name__} monitors {monitor}, but data.val_split is 0: there is no "
                    "validation. Set data.val_split (e.g. 5000), or remove the callback or let it monitor a "
                    "train/ metric."
                )


def warn_if_untrained(trainer: Trainer, subcommand: str, ckpt_path: Optional[str]) -> None:
    """A run that reports the accuracy of weights nothing was learned into says so."""
    if subcommand == "fit":
        nothing = trainer.max_epochs == 0 or trainer.max_steps == 0 or trainer.limit_train_batches == 0
        if nothing and not ckpt_path:
            warnings.warn("no training step will run (max_epochs, max_steps or limit_train_batches is 0): what "
                          "follows is measured on untrained weights.", RunWarning)
    elif not ckpt_path:
        warnings.warn(f"`{subcommand}` without --ckpt_path uses the model's initial, untrained weights. Give a "
                      "checkpoint (`--ckpt_path last` for the newest run's).", RunWarning)


def lightning_refusal(error: BaseException, subcommand: str) -> Optional[UserError]:
    """Lightning's refusal of a setting (one of `CONSTRUCTION_ERRORS` raised in Lightning's own code; the caller
    narrows the types where it matters) as a `UserError` in Lightning's words; None for anything else."""
    if not isinstance(error, CONSTRUCTION_ERRORS) or not _raised_in_lightning(error.__traceback__):
        return None
    words = " ".join(str(error).split())
    return UserError(f"Lightning refused the run's settings: {words} Check the config's trainer section (or the "
                     f"`--trainer.*` options; `digitlab {subcommand} --help` lists them): trainer.accelerator and "
                     "trainer.devices choose the hardware, and `--config configs/trainer/cpu.yaml` runs anywhere.")


def _raised_in_lightning(traceback: Optional[TracebackType]) -> bool:
    last = None
    while traceback is not None:
        last, traceback = traceback, traceback.tb_next
    return last is not None and not LIGHTNING_PACKAGES.isdisjoint(Path(last.tb_frame.f_code.co_filename).parts)


def model_too_large(error: BaseException, name: Optional[str], model_config: Any) -> Optional[UserError]:
    """The model `name`, too large to build with its settings (torch cannot allocate or even count its tensors),
    as one paragraph naming its whole-number settings; None for any other failure (a bug, with its traceback)."""
    for cause in causes(error):
        if isinstance(cause, (MemoryError, OverflowError)) or (isinstance(cause, RuntimeError) and
                                                               TOO_LARGE.search(str(cause))):
            words = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
            reason = re.sub(r"^\[enforce fail at [^\]]*\]\s*err == 0\.\s*", "", words)
            init_args = model_config.get("init_args") if hasattr(model_config, "get") else None
            sizes = ", ".join(f"{key}={value}" for key, value in dict(init_args or {}).items()
                              if isinstance(value, int) and not isinstance(value, bool))
            return UserError(f"The model {name} cannot be built with its settings ({sizes or 'as given'}): {reason}. "
                             "A model's size follows from its settings: choose smaller ones (`digitlab fit "
                             f"--model.help {name}` lists them).")
    return None
