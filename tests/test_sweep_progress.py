"""What a sweep says and draws as it goes, without running one: the line per trial, and the plots' axis and
note (on a study in memory)."""

from __future__ import annotations

from datetime import datetime, timedelta

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState

from digitlab.sweep.progress import trial_line
from digitlab.sweep.results import HISTORY, IMPORTANCE, MEANINGFUL, draw

START = datetime(2026, 1, 1, 12, 0, 0)


def trial(number: int, state: TrialState, value: float | None = None, seconds: float = 41.0,
          intermediate: dict[int, float] | None = None, **user_attrs) -> FrozenTrial:
    return FrozenTrial(number=number, state=state, value=value, datetime_start=START,
                       datetime_complete=START + timedelta(seconds=seconds), params={}, distributions={},
                       user_attrs=user_attrs, system_attrs={}, intermediate_values=intermediate or {},
                       trial_id=number)


def test_a_completed_trial_says_its_value_the_best_so_far_the_pruned_and_its_time():
    trials = [trial(0, TrialState.COMPLETE, 0.9701), trial(1, TrialState.COMPLETE, 0.98384),
              trial(2, TrialState.PRUNED, intermediate={0: 0.5}), trial(3, TrialState.PRUNED),
              trial(4, TrialState.RUNNING), trial(5, TrialState.COMPLETE, 0.9812, seconds=40.6)]
    assert trial_line(trials[5], trials, 12, "val/acc", maximize=True) == \
        "trial 5 (5/12 done) · val/acc 0.9812 · best 0.9838 (trial 1) · 2 pruned · 41 s"


def test_a_pruned_trial_says_when_and_at_what_value_and_a_minimised_objective_picks_the_lowest():
    trials = [trial(0, TrialState.COMPLETE, 0.31), trial(1, TrialState.COMPLETE, 0.25),
              trial(2, TrialState.PRUNED, intermediate={0: 0.9, 1: 0.7}, validations=2, seconds=8)]
    assert trial_line(trials[2], trials, 4, "val/loss", maximize=False) == \
        "trial 2 (3/4 done) · pruned after 2 validations (val/loss 0.7000) · best 0.2500 (trial 1) · 1 pruned · 8 s"


def test_a_trial_stopped_for_a_reason_says_it_and_no_best_before_a_completed_trial():
    diverged = trial(0, TrialState.PRUNED, validations=0, stopped="The training loss became NaN at step 3", seconds=2)
    assert trial_line(diverged, [diverged], 1, "val/acc", maximize=True) == \
        "trial 0 (1/1 done) · pruned: The training loss became NaN at step 3 · no best yet · 1 pruned · 2 s"


def test_equal_values_name_the_earliest_trial_as_optuna_does():
    trials = [trial(0, TrialState.COMPLETE, 0.5), trial(1, TrialState.COMPLETE, 0.5)]
    assert "best 0.5000 (trial 0)" in trial_line(trials[1], trials, 2, "val/acc", maximize=True)


def study_with(finished: int) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    for number in range(finished):
        lr, width = 0.001 * (number + 1), 16.0 * (number % 3 + 1)
        study.add_trial(optuna.trial.create_trial(
            params={"lr": lr, "width": width}, value=0.5 + 0.01 * number + 0.001 * width,
            distributions={"lr": FloatDistribution(1e-4, 1.0), "width": FloatDistribution(1.0, 100.0)}))
    return study


def test_the_history_counts_whole_trials():
    from matplotlib import pyplot

    axes, note = draw(study_with(3), HISTORY)
    try:
        assert note == ""
        ticks = [tick for tick in axes.get_xticks() if axes.get_xlim()[0] <= tick <= axes.get_xlim()[1]]
        assert ticks and all(float(tick).is_integer() for tick in ticks)
    finally:
        pyplot.close(axes.figure)


@pytest.mark.parametrize("finished, meaningful", [(3, False), (MEANINGFUL, True)])
def test_importances_from_few_trials_say_they_are_not_yet_meaningful(finished, meaningful):
    from matplotlib import pyplot

    axes, note = draw(study_with(finished), IMPORTANCE)
    try:
        title = axes.get_title(loc="left")
        assert title.startswith("Hyperparameter Importances")
        if meaningful:
            assert note == "" and "meaningful" not in title
        else:
            assert note == f"from {finished} finished trials: not yet meaningful, wait for {MEANINGFUL} or more"
            assert note in title
    finally:
        pyplot.close(axes.figure)
