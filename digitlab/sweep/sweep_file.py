"""The sweep file: what to search (keyed by the run config's own dotted keys), what to optimise, and how.

```yaml
space:
  model.init_args.optimizer.init_args.lr: {type: float, low: 1.0e-4, high: 3.0e-2, log: true}
  data.batch_size: {type: categorical, choices: [64, 128, 256]}
objective: val/acc          # a metric every trial logs after each validation
direction: maximize         # required unless the objective is val/acc
trials: 12                  # the study's total (--trials overrides)
max_epochs: 3               # each trial's epoch budget (null: the run config's own)
sampler: {type: tpe, seed: 42, n_startup_trials: 5}   # tpe | random; other keys go to Optuna's class
pruner: {type: median, n_startup_trials: 3}          # median | hyperband | none
heartbeat_interval: 10      # seconds between a running trial's heartbeats
grace_period: 30            # a trial without a heartbeat for this long is failed and retried
```

Everything is checked when the file is loaded, so a mistake is reported before any run folder exists.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import optuna
from jsonargparse import get_loader
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    distribution_to_json,
)

from digitlab.config.bounded_yaml import load_yaml_file, quoted
from digitlab.errors import UserError
from digitlab.utils.text import closest, did_you_mean

DEFAULT_OBJECTIVE = "val/acc"
DIRECTIONS = ("maximize", "minimize")
SAMPLERS = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler}
PRUNERS = {"median": optuna.pruners.MedianPruner, "hyperband": optuna.pruners.HyperbandPruner,
           "none": optuna.pruners.NopPruner}
DEFAULT_SEED = 42
TRY_OUT_TRIALS, TRY_OUT_STEPS = 3, 2  # the trial run of the sampler and pruner on a study in memory
FILE_KEYS = ("space", "objective", "direction", "trials", "max_epochs", "sampler", "pruner", "heartbeat_interval",
             "grace_period")
MAX_CHOICES = 1000  # every choice is tried in a run config before the sweep starts
PARAMETER_KEYS = {"float": ("type", "low", "high", "step", "log"), "int": ("type", "low", "high", "step", "log"),
                  "categorical": ("type", "choices")}


@dataclass(frozen=True)
class SweepFile:
    """A checked sweep file. `space` maps each dotted run-config key to its Optuna distribution."""

    path: Path
    space: dict[str, BaseDistribution]
    objective: str
    direction: str
    trials: int
    max_epochs: Optional[int]
    sampler: str
    sampler_args: dict[str, Any]
    pruner: str
    pruner_args: dict[str, Any]
    heartbeat_interval: int
    grace_period: int

    @property
    def maximize(self) -> bool:
        return self.direction == "maximize"

    def identity(self) -> dict[str, Any]:
        """What a sweep's name stands for: its search space and objective. A study keeps it in its user
        attributes; a later run under the same name must bring the same (sampler, pruner, budget may change)."""
        space = {key: json.loads(distribution_to_json(d)) for key, d in sorted(self.space.items())}
        identity = {"objective": self.objective, "direction": self.direction, "space": space}
        text = json.dumps(identity, sort_keys=True)
        return {**identity, "fingerprint": hashlib.sha256(text.encode()).hexdigest()[:16]}

    def make_sampler(self, trial_number: int = 0) -> optuna.samplers.BaseSampler:
        """The sampler for trial `trial_number`. A seeded sampler is seeded with seed + trial number, so that a
        sweep on one worker repeats itself (also when it is continued later: no replay of earlier random
        draws) and several workers never draw the same random start-up trials."""
        arguments = dict(self.sampler_args)
        if arguments.get("seed") is not None:
            arguments["seed"] += trial_number
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return SAMPLERS[self.sampler](**arguments)

    def make_pruner(self) -> optuna.pruners.BasePruner:
        arguments = dict(self.pruner_args)
        if self.pruner == "hyperband":
            arguments.setdefault("max_resource", self.max_epochs or "auto")
        return PRUNERS[self.pruner](**arguments)


def suggest(trial: optuna.Trial, key: str, distribution: BaseDistribution) -> Any:
    """Ask `trial` for the value of `key` (a retried trial gets its earlier value back)."""
    if isinstance(distribution, CategoricalDistribution):
        return trial.suggest_categorical(key, distribution.choices)
    if isinstance(distribution, IntDistribution):
        return trial.suggest_int(key, distribution.low, distribution.high, step=distribution.step,
                                 log=distribution.log)
    return trial.suggest_float(key, distribution.low, distribution.high, step=distribution.step,
                               log=distribution.log)


def candidate_values(distribution: BaseDistribution) -> list[Any]:
    """Values that every trial's config must accept: the ends of a range, every choice."""
    if isinstance(distribution, CategoricalDistribution):
        return list(distribution.choices)
    return [distribution.low, distribution.high]


def load_sweep_file(path: Path) -> SweepFile:
    if not path.is_file():
        raise UserError(f"The sweep file {path} does not exist. Give a YAML file with a `space:` section, for "
                        "example --sweep configs/sweeps/lenet5.yaml.")
    content = load_yaml_file(path, "sweep file", get_loader("yaml"))  # jsonargparse's YAML: 1e-4 is a number
    if not isinstance(content, dict):
        raise UserError(f"The sweep file {path} must be a mapping with a `space:` section (see "
                        "configs/sweeps/lenet5.yaml).")
    where = f"In the sweep file {path},"
    _refuse_unknown(content, FILE_KEYS, where, "a key of a sweep file")
    space = content.get("space")
    if not isinstance(space, dict) or not space:
        raise UserError(f"{where} `space:` must map run-config keys (such as data.batch_size) to distributions, "
                        "for example `data.batch_size: {type: categorical, choices: [64, 128]}`.")
    objective = content.get("objective", DEFAULT_OBJECTIVE)
    if not isinstance(objective, str) or not objective:
        raise UserError(f"{where} objective must be a metric name such as val/acc or val/loss.")
    direction = content.get("direction")
    if direction is None and objective != DEFAULT_OBJECTIVE:
        raise UserError(f"{where} the objective {objective} needs a `direction:` (maximize or minimize).")
    direction = direction or "maximize"
    if direction not in DIRECTIONS:
        raise UserError(f"{where} direction is {direction!r}: it must be maximize or minimize.")
    sampler, sampler_args = _component(content.get("sampler", "tpe"), SAMPLERS, "sampler", where)
    sampler_args.setdefault("seed", DEFAULT_SEED)
    pruner, pruner_args = _component(content.get("pruner", "median"), PRUNERS, "pruner", where)
    sweep = SweepFile(
        path=path,
        space={str(key): _distribution(str(key), spec, where) for key, spec in space.items()},
        objective=objective,
        direction=direction,
        trials=_positive_int(content.get("trials", 20), "trials", where),
        max_epochs=None if content.get("max_epochs") is None else _positive_int(content["max_epochs"],
                                                                                "max_epochs", where),
        sampler=sampler,
        sampler_args=sampler_args,
        pruner=pruner,
        pruner_args=pruner_args,
        heartbeat_interval=_positive_int(content.get("heartbeat_interval", 10), "heartbeat_interval", where),
        grace_period=_positive_int(content.get("grace_period", 30), "grace_period", where),
    )
    if sweep.grace_period <= sweep.heartbeat_interval:
        raise UserError(f"{where} grace_period ({sweep.grace_period} s) must be longer than heartbeat_interval "
                        f"({sweep.heartbeat_interval} s), or live trials would be failed.")
    for make, name in ((sweep.make_sampler, "sampler"), (sweep.make_pruner, "pruner")):
        _try_to_build(make, name, where)
    _try_out(sweep, where)
    return sweep


def _distribution(key: str, spec: Any, where: str) -> BaseDistribution:
    here = f"{where} {key}"
    if not isinstance(spec, dict):
        raise UserError(f"{here} must be a mapping such as {{type: float, low: 0.001, high: 0.1, log: true}}, "
                        f"{{type: int, low: 32, high: 256, step: 32}} or {{type: categorical, choices: [a, b]}}.")
    kind = spec.get("type")
    if kind not in PARAMETER_KEYS:
        hint = did_you_mean(closest(str(kind), PARAMETER_KEYS) if kind is not None else None)
        raise UserError(f"{here} has type {kind!r}: it must be float, int or categorical.{hint}")
    _refuse_unknown(spec, PARAMETER_KEYS[kind], f"{here}:", f"a setting of a {kind} distribution")
    if kind == "categorical":
        return _categorical(spec.get("choices"), here)
    integer = kind == "int"
    low, high = (_number(spec.get(bound), bound, integer, here) for bound in ("low", "high"))
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise UserError(f"{here}: log must be true or false, not {log!r}.")
    step = spec.get("step")
    if step is not None:
        step = _number(step, "step", integer, here)
        if step <= 0:
            raise UserError(f"{here}: step must be positive, not {step}.")
        if log:
            raise UserError(f"{here}: step and log cannot be combined (a log scale has no even step). "
                            "Remove one of them.")
    if low >= high:
        raise UserError(f"{here}: low ({low}) must be below high ({high}). For a fixed value, set it in the run "
                        "config instead of the search space.")
    if log and low <= 0:
        raise UserError(f"{here}: a log scale needs low > 0, not {low}. Raise low, or drop `log: true`.")
    if integer:
        return IntDistribution(low, high, log=log, step=step or 1)
    return FloatDistribution(low, high, log=log, step=step)


def _categorical(choices: Any, here: str) -> CategoricalDistribution:
    if not isinstance(choices, list) or not choices:
        raise UserError(f"{here}: choices must be a non-empty list, such as [64, 128, 256].")
    if len(choices) > MAX_CHOICES:
        raise UserError(f"{here} lists {len(choices):,} choices, more than the {MAX_CHOICES:,} a sweep tries: every "
                        "choice is checked against the run config before the first trial. Search a range instead "
                        "({type: int, low: ..., high: ...}), or list fewer choices.")
    for choice in choices:
        if choice is not None and not isinstance(choice, (bool, int, float, str)):
            raise UserError(f"{here}: the choice {quoted(repr(choice))} is not a number, string, true/false or null.")
    if len({json.dumps(choice) for choice in choices}) < len(choices):
        raise UserError(f"{here}: choices {quoted(repr(choices))} repeat a value.")
    return CategoricalDistribution(choices)


def _number(value: Any, name: str, integer: bool, here: str) -> float | int:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value):
        expected = "an integer" if integer else "a finite number"
        raise UserError(f"{here}: {name} must be {expected}, not {value!r}.")
    return value if integer else float(value)


def _positive_int(value: Any, name: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{where} {name} must be a positive integer, not {value!r}.")
    return value


def _component(spec: Any, known: dict[str, Any], what: str, where: str) -> tuple[str, dict[str, Any]]:
    """`tpe` or `{type: tpe, seed: 1, ...}` -> ("tpe", {"seed": 1, ...})."""
    arguments = dict(spec) if isinstance(spec, dict) else {"type": spec}
    name = arguments.pop("type", None)
    if name not in known:
        hint = did_you_mean(closest(str(name), known) if name is not None else None)
        raise UserError(f"{where} the {what} {name!r} is not one digitlab knows: use one of "
                        f"{', '.join(known)}.{hint}")
    _check_arguments(known[name], arguments, what, where)
    return name, arguments


def _check_arguments(cls: type, arguments: dict[str, Any], what: str, where: str) -> None:
    parameters = inspect.signature(cls).parameters
    accepted = [name for name in parameters if name not in ("self", "args", "kwargs")]
    _refuse_unknown(arguments, tuple(accepted), f"{where} {what}:", f"a setting of Optuna's {cls.__name__}")
    for name in arguments:
        if "Callable" in str(parameters[name].annotation):  # Optuna calls it only once it samples
            raise UserError(f"{where} the {what}'s {name} takes a Python function, which a sweep file cannot "
                            f"give. Remove {name}: Optuna's default is used.")


def _try_to_build(make: Any, what: str, where: str) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            make()
    except (TypeError, ValueError) as error:
        raise UserError(f"{where} the {what}'s settings are not accepted by Optuna: {error}") from None


def _try_out(sweep: SweepFile, where: str) -> None:
    """Optuna checks some settings only while it samples or prunes: run them on a few trials of a study in
    memory, so that a refusal comes now, as one paragraph, and not as a traceback in the first trial."""
    def objective(trial: optuna.Trial) -> float:
        for key, distribution in sweep.space.items():
            suggest(trial, key, distribution)
        for step in range(TRY_OUT_STEPS):
            trial.report(0.0, step)
            trial.should_prune()
        return 0.0

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # not its "Trial 0 failed" with the traceback
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            study = optuna.create_study(sampler=sweep.make_sampler(), pruner=sweep.make_pruner(),
                                        direction=sweep.direction)
            study.optimize(objective, n_trials=TRY_OUT_TRIALS, catch=())
    except (TypeError, ValueError, ArithmeticError) as error:  # the last: hyperband's reduction_factor 1
        words = " ".join(str(error).split())[:300].rstrip(".") or type(error).__name__
        raise UserError(f"{where} the sampler's or pruner's settings are not accepted by Optuna: {words}. Check "
                        "them against Optuna's documentation of the class.") from None
    finally:
        optuna.logging.set_verbosity(verbosity)


def _refuse_unknown(mapping: dict, allowed: tuple[str, ...], where: str, what: str) -> None:
    for key in mapping:
        if key not in allowed:
            hint = did_you_mean(closest(str(key), allowed))
            raise UserError(f"{where} {key!r} is not {what}.{hint} Those are: {', '.join(allowed)}.")
