"""What a sweep says as each trial ends: one line, e.g.
``trial 3 (4/12 done) · val/acc 0.9812 · best 0.9838 (trial 1) · 2 pruned · 41 s``."""

from __future__ import annotations

from typing import Iterable, Optional

from optuna.trial import FrozenTrial, TrialState

COUNTED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)  # the trials that count towards --trials


def trial_line(trial: FrozenTrial, trials: Iterable[FrozenTrial], total: int, objective: str, maximize: bool) -> str:
    """The line for `trial`, which has just ended, given the study's `trials` (it among them) and the sweep's
    `total`: how it ended, the best so far, how many were pruned and how long it took."""
    trials = list(trials)
    done = sum(t.state in COUNTED_STATES for t in trials)
    pruned = sum(t.state == TrialState.PRUNED for t in trials)
    best = _best(trials, maximize)
    parts = [f"trial {trial.number} ({done}/{total} done)", _outcome(trial, objective),
             f"best {best.value:.4f} (trial {best.number})" if best is not None else "no best yet",
             f"{pruned} pruned"]
    if trial.duration is not None:
        parts.append(f"{trial.duration.total_seconds():.0f} s")
    return " · ".join(parts)


def _outcome(trial: FrozenTrial, objective: str) -> str:
    if trial.state == TrialState.COMPLETE and trial.value is not None:
        return f"{objective} {trial.value:.4f}"
    validations = trial.user_attrs.get("validations")
    after = f" after {validations} validation{'s' * (validations != 1)}" if validations else ""
    last = (f" ({objective} {trial.intermediate_values[max(trial.intermediate_values)]:.4f})"
            if trial.intermediate_values else "")
    reason = f": {trial.user_attrs['stopped']}" if "stopped" in trial.user_attrs else ""
    return f"{trial.state.name.lower()}{after}{last}{reason}"


def _best(trials: list[FrozenTrial], maximize: bool) -> Optional[FrozenTrial]:
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    if not complete:
        return None
    if maximize:  # the earliest of equal values, as Optuna's best_trial
        return max(complete, key=lambda t: (t.value, -t.number))
    return min(complete, key=lambda t: (t.value, t.number))
