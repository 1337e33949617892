"""One table of checks for every numeric option of every subcommand (`OPTIONS`), and the argparse parser that
applies it (`OptionParser`).

A number that cannot work (NaN, an infinity, a negative timeout, a port out of range) is refused while the
command line is parsed, in one paragraph naming the option, before anything is loaded, bound or written:
NaN compares false with everything, so a check written later as ``value < 0`` lets it through. An argparse
option of type int or float that has no entry here is a bug, raised when its parser is built; the
Lightning subcommands' config is checked against the ``RUN`` entries (and every float in it for finiteness)
by `digitlab.training.checks.check_config`.
"""

from __future__ import annotations

import argparse
import math
import re
from dataclasses import dataclass
from typing import Any, NoReturn, Optional, Union

from digitlab.errors import UserError
from digitlab.utils.text import closest, did_you_mean

Number = Union[int, float]
# argparse's words for a value outside an option's choices (its quotes around each choice vary by version)
_INVALID_CHOICE = re.compile(r"argument (\S+): invalid choice: '(.*)' \(choose from (.*)\)$")
RUN = "fit|validate|test|predict"  # the command of the Lightning subcommands' config keys


@dataclass(frozen=True)
class Range:
    """The values a numeric option accepts: finite, from `low` to `high` (either end may be open)."""

    low: Optional[Number] = None
    high: Optional[Number] = None
    low_inclusive: bool = True
    unit: str = ""  # what the number counts, e.g. "seconds"

    def admits(self, value: Number) -> bool:
        if not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low if self.low_inclusive else value <= self.low):
            return False
        return self.high is None or value <= self.high

    def describe(self, integer: bool) -> str:
        kind = "an integer" if integer else "a finite number"
        unit = f" ({self.unit})" if self.unit else ""
        if self.low is not None and self.high is not None and self.low_inclusive:
            return f"{kind} from {self.low:,} to {self.high:,}{unit}"
        ends = []
        if self.low is not None:
            ends.append(f"{'at least' if self.low_inclusive else 'above'} {self.low:,}")
        if self.high is not None:
            ends.append(f"at most {self.high:,}")
        return f"{kind}{' ' + ' and '.join(ends) if ends else ''}{unit}"


OPTIONS: dict[tuple[str, str], Range] = {
    ("serve", "port"): Range(0, 65535),  # 0: any free port; 1 to 1023 are refused with the reason when bound
    ("serve", "max_batch_size"): Range(1, 4096),
    # 0 answers each request alone; a longer wait than a minute would only hold requests back.
    ("serve", "batch_timeout"): Range(0, 60, unit="seconds"),
    ("serve", "timeout"): Range(0, 86_400, low_inclusive=False, unit="seconds"),
    ("serve", "max_body_bytes"): Range(1, 2**30, unit="bytes"),
    ("serve", "max_pixels"): Range(1, 2**30, unit="pixels"),
    ("sweep", "trials"): Range(1, 1_000_000),
    ("lr_find", "min_lr"): Range(0, low_inclusive=False),
    ("lr_find", "max_lr"): Range(0, low_inclusive=False),
    ("lr_find", "num_training"): Range(2, 100_000, unit="steps"),  # a suggestion needs at least two losses
    ("sweep", "timeout"): Range(0, low_inclusive=False, unit="seconds"),
    # The Lightning subcommands' config: settings Lightning takes unchecked (it divides by some of them);
    # it refuses the others itself, in its own words (`checks.lightning_refusal`).
    (RUN, "seed_everything"): Range(0, 2**32 - 1),  # what seed_everything accepts (numpy's seeds)
    (RUN, "last_checkpoint_every_n_steps"): Range(0),
    (RUN, "trainer.accumulate_grad_batches"): Range(1),
    (RUN, "trainer.check_val_every_n_epoch"): Range(1),
    (RUN, "trainer.min_epochs"): Range(0),
    (RUN, "trainer.min_steps"): Range(0),
    (RUN, "trainer.num_sanity_val_steps"): Range(-1),  # -1: the whole validation set
    (RUN, "trainer.log_every_n_steps"): Range(0),
    (RUN, "trainer.gradient_clip_val"): Range(0),
    # Checked again by the data module, but here before a sweep writes anything (a trial's config parses).
    (RUN, "data.seed"): Range(0, 2**63 - 1),
    (RUN, "data.batch_size"): Range(1),
    (RUN, "data.eval_batch_size"): Range(1),
    (RUN, "data.val_split"): Range(0),
    (RUN, "data.augment_rotation"): Range(0, 180, unit="degrees"),
    (RUN, "data.augment_scale"): Range(0, 0.9),  # a share of the size: 1 would shrink an image to nothing
    (RUN, "data.augment_translation"): Range(0, 1),  # a share of the side
}


def refusal(command: str, key: str, value: Any, shown: str) -> Optional[str]:
    """Why `value` (a parsed number) cannot be `key` of `command`, or None. `shown` names it: ``--port 80``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    limits = OPTIONS.get((command, key))
    if not math.isfinite(value):
        expected = limits.describe(isinstance(value, int)) if limits else "a finite number"
        return f"{shown} is not valid: NaN and infinities are refused; expected {expected}."
    if limits is not None and not limits.admits(value):
        return f"{shown} is not valid: expected {limits.describe(isinstance(value, int))}."
    return None


class CheckedNumber:
    """An argparse `type` that reads an int or a float and refuses it unless its `OPTIONS` entry admits it."""

    def __init__(self, command: str, dest: str, kind: type) -> None:
        if (command, dest) not in OPTIONS:  # a bug: every numeric option needs its range
            raise LookupError(f"the numeric option --{dest} of `digitlab {command}` has no entry in "
                              "digitlab.config.option_checks.OPTIONS")
        self.command, self.dest, self.kind, self.range = command, dest, kind, OPTIONS[(command, dest)]

    def __call__(self, text: str) -> Number:
        try:
            value = self.kind(text)
        except ValueError:
            value = None
        if value is None or not self.range.admits(value):
            # A UserError, not argparse's ArgumentTypeError: one paragraph, without argparse's usage lines.
            raise UserError(f"--{self.dest} {text if value is None else value} is not valid: expected "
                            f"{self.range.describe(self.kind is int)}. `digitlab {self.command} --help` "
                            "describes it.")
        return value


class OptionParser(argparse.ArgumentParser):
    """The argparse parser of a digitlab subcommand: every int or float option checked by `OPTIONS`, no
    option prefixes (`--max_batch 4` for `--max_batch_size` is refused as a typo, not guessed), and its
    errors as one paragraph with the closest option."""

    def __init__(self, command: str, **kwargs: Any) -> None:
        self.command = command
        self.option_names: list[str] = []
        kwargs.setdefault("prog", f"digitlab {command}")
        super().__init__(allow_abbrev=False, **kwargs)

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        if action.type in (int, float):
            action.type = CheckedNumber(self.command, action.dest, action.type)
        self.option_names += [name for name in action.option_strings if name.startswith("--")]
        return action

    def error(self, message: str) -> NoReturn:
        if choice := _INVALID_CHOICE.search(message):
            names, given, listed = choice.groups()
            option = next((name for name in names.split("/") if name.startswith("--")), names.split("/")[0])
            choices = [item.strip().strip("'\"") for item in listed.split(",")]
            raise UserError(f"{option} {given} is not valid: choose one of {', '.join(choices)}."
                            f"{did_you_mean(closest(given, choices))} `digitlab {self.command} --help` describes "
                            "them.")
        hint = ""
        if unknown := re.search(r"unrecognized arguments: (--[^\s=]+)", message):
            hint = did_you_mean(closest(unknown.group(1), self.option_names))
        raise UserError(f"{message}.{hint} `digitlab {self.command} --help` lists the options.")
