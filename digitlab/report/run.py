"""`Run`: what the report shows of one run or evaluation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class Run:
    """What the report shows of one run; None where the run did not save it."""

    version: str
    kind: str = "fit"  # or the evaluation: validate, test, predict
    checkpoint: Optional[str] = None  # the checkpoint an evaluation evaluated
    model: Optional[str] = None
    lr: Optional[float] = None
    batch_size: Optional[int] = None
    epochs: Optional[int] = None
    best_val_acc: Optional[float] = None
    test_acc: Optional[float] = None
    wall_time_s: Optional[float] = None
    params: Optional[int] = None
    val_acc_curve: list[tuple[int, float]] = field(default_factory=list)  # (epoch, val/acc), epochs from 0 as Lightning counts
    of: Optional[str] = None  # an evaluation's run (its `version`), when that run is in the report
