"""The run config that every trial shares: parsed and checked by `digitlab fit`'s own parser before any trial.

A trial is `digitlab fit` with the user's arguments, then the sweep's settings, then the trial's values as
``--key=value``: a later flag wins, so the sweep's settings beat the config files but never a flag the user
typed (typing a searched key is refused instead).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from jsonargparse import Namespace

from digitlab.errors import UserError
from digitlab.runs.layout import sweeps_root
from digitlab.sweep.sweep_file import SweepFile, candidate_values
from digitlab.training.run import ParsedRun, parse_run
from digitlab.utils.text import closest, did_you_mean

# Settings that run several processes per trial. Lightning's DDP launcher starts the extra processes by
# running the command line again, which for a sweep would start more sweep workers, not ranks of one trial.
MULTI_PROCESS_STRATEGIES = ("ddp", "fsdp", "deepspeed", "xla")


@dataclass
class RunConfig:
    """The user's `digitlab fit` arguments, resolved; `trial_args` gives a trial's arguments."""

    user_args: list[str]
    sweep_args: list[str]  # the sweep's own settings, after the user's arguments
    config: Namespace  # the resolved fit config, without the sweep's settings
    parsed: ParsedRun  # its parser parses each trial's arguments

    def trial_args(self, values: dict[str, Any], test_after_fit: bool = False) -> list[str]:
        """A trial's `digitlab fit` arguments. Trials skip the test set: a sweep chooses by validation, and
        `best.yaml` (which tests) is where the test set is used once."""
        return ["--test_after_fit", str(test_after_fit).lower(), *self.user_args, *self.sweep_args,
                *(f"--{key}={as_flag_value(value)}" for key, value in values.items())]

    def sweeps_root(self) -> Path:
        """lightning_logs/sweeps beside the runs of the run config."""
        return sweeps_root(self.config.trainer)

    def parse(self, args: list[str]) -> Namespace:
        """`args` (a trial's fit arguments) parsed by the same parser, without building it again."""
        return self.parsed.cli.parse(args)


def as_flag_value(value: Any) -> str:
    """A value as jsonargparse reads it back: true/false, null, the shortest exact float, strings as they are."""
    return value if isinstance(value, str) else json.dumps(value)


def load_run_config(user_args: list[str], sweep: SweepFile) -> RunConfig:
    """Parse the user's fit arguments, then check the search space and the trial settings against them."""
    parsed = parse_run("fit", user_args)
    config = parsed.config
    keys = list(config.keys())
    for key in sweep.space:
        if key not in keys:
            hint = did_you_mean(closest(key, keys))
            raise UserError(f"In the sweep file {sweep.path}, {key} is not a key of the run config.{hint} Search "
                            "keys are the config's own dotted keys, as `digitlab fit ... --print_config` shows them "
                            "(for example model.init_args.optimizer.init_args.lr, data.batch_size).")
        if _typed(user_args, key):
            raise UserError(f"{key} is searched by the sweep file {sweep.path} and also set on the command line "
                            f"(--{key}). Remove one of the two.")
    _refuse_several_processes(config)
    _refuse_no_validation(config, sweep)
    sweep_args = []
    if sweep.max_epochs is not None and not _typed(user_args, "trainer.max_epochs"):
        sweep_args.append(f"--trainer.max_epochs={sweep.max_epochs}")
    if str(config.trainer.get("devices")) == "auto":  # "auto" on a multi-GPU machine is DDP over all of them
        sweep_args.append("--trainer.devices=1")
    run_config = RunConfig(list(user_args), sweep_args, config, parsed)
    _check_values(run_config, sweep)
    return run_config


def _check_values(run_config: RunConfig, sweep: SweepFile) -> None:
    """Every trial's config must parse: try the ends of each range and every choice, a few at a time."""
    candidates = {key: candidate_values(d) for key, d in sweep.space.items()}
    for i in range(max(map(len, candidates.values()))):
        values = {key: options[i % len(options)] for key, options in candidates.items()}
        try:
            run_config.parse(run_config.trial_args(values))
        except UserError:
            _name_the_value(run_config, values, sweep)
            raise


def _name_the_value(run_config: RunConfig, values: dict[str, Any], sweep: SweepFile) -> None:
    for key, value in values.items():
        try:
            run_config.parse(run_config.trial_args({key: value}))
        except UserError as error:
            raise UserError(f"In the sweep file {sweep.path}, {key} can be {value!r}, which the run config does "
                            f"not accept: {error}") from None


def _typed(args: list[str], key: str) -> bool:
    return any(arg == f"--{key}" or arg.startswith(f"--{key}=") for arg in args)


def _refuse_several_processes(config: Namespace) -> None:
    trainer = config.trainer
    strategy = trainer.get("strategy")
    strategy_name = str(strategy.get("class_path") if isinstance(strategy, (dict, Namespace)) else strategy).lower()
    several = (
        _device_count(trainer.get("devices")) != 1
        or (trainer.get("num_nodes") or 1) > 1
        or any(name in strategy_name for name in MULTI_PROCESS_STRATEGIES)
    )
    if several:
        raise UserError(
            f"A sweep runs each trial in one process on one device, but the run config asks for "
            f"devices={trainer.get('devices')}, num_nodes={trainer.get('num_nodes')}, strategy={strategy_name} "
            "(Lightning's DDP would start its extra processes by running the sweep command again). Leave out the "
            "DDP overlay, and use several devices by starting one sweep worker per GPU on a shared storage: "
            "CUDA_VISIBLE_DEVICES=0 digitlab sweep ... --storage postgresql://... & CUDA_VISIBLE_DEVICES=1 ..."
        )


def _device_count(devices: Any) -> Optional[int]:
    """How many devices Lightning's `devices` means: 1 for "auto" (a sweep pins it to 1), None for all (-1)."""
    if devices is None or str(devices).strip() == "auto":
        return 1
    if isinstance(devices, (list, tuple)):  # device indices
        return len(devices)
    text = str(devices).strip()
    if "," in text:  # "0,1" or "0,": device indices
        return len([part for part in text.split(",") if part.strip()])
    return int(text) if text.isdigit() else None


def _refuse_no_validation(config: Namespace, sweep: SweepFile) -> None:
    val_split = config.get("data.val_split")
    if sweep.objective.startswith("val/") and val_split is not None and val_split == 0:
        raise UserError(f"The sweep optimises {sweep.objective}, but the run config has data.val_split: 0, so no "
                        "trial would validate. Set data.val_split (for example --data.val_split 5000).")
