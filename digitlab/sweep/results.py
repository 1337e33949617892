"""What a sweep leaves in its folder after each run of the command: the best trial's config as `best.yaml`,
and Optuna's pictures of the optimisation history and of the parameters' importance.

Each file is written by `atomic_write`, over the sweep's own earlier one: a reader never sees half a file, and
nothing but the sweep's own outputs is replaced (a symbolic link in their place is neither followed nor
replaced; a file that cannot be written is named as not written, never announced).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from digitlab.config.bounded_yaml import load_yaml_text
from digitlab.utils.atomic import atomic_write, atomic_write_text
from digitlab.utils.destination import write_failure

BEST = "best.yaml"
HISTORY = "history.png"
IMPORTANCE = "importance.png"
MEANINGFUL = 10  # finished trials below which parameter importances are mostly noise


def write_results(study: optuna.Study, folder: Path, objective: str, test_after_fit: bool) -> list[str]:
    """Write what can be written; return one line for each file (or why it was not written)."""
    lines = []
    best = best_trial(study)
    if best is None or "config" not in best.user_attrs:
        lines.append(f"{BEST}: not written, no trial has completed yet")
    else:
        path = folder / BEST
        try:
            atomic_write_text(path, best_config(best, study.study_name, objective, test_after_fit), overwrite=True)
        except OSError as error:
            lines.append(f"{path}: not written, {write_failure(error)}")
        else:
            lines.append(f"{path}: trial {best.number}'s config; replay it with `digitlab fit --config {path}`")
    lines += _plots(study, folder)
    return lines


def best_trial(study: optuna.Study) -> Optional[FrozenTrial]:
    try:
        return study.best_trial
    except ValueError:  # no completed trial
        return None


def best_config(trial: FrozenTrial, sweep: str, objective: str, test_after_fit: bool) -> str:
    """The trial's own config.yaml, testing after the fit as the user's config says (trials skip the test)."""
    config = load_yaml_text(trial.user_attrs["config"], f"The stored config of trial {trial.number} of sweep {sweep}")
    config["test_after_fit"] = test_after_fit
    header = (f"# Trial {trial.number} of sweep {sweep}: the best, with {objective} {trial.value} "
              f"({trial.user_attrs.get('validations', '?')} validations).\n"
              "# Replay: digitlab fit --config THIS_FILE (add --trainer.max_epochs N to train longer).\n")
    return header + yaml.safe_dump(config, sort_keys=False)


def _plots(study: optuna.Study, folder: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    from matplotlib import pyplot

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    lines = []
    for name, needed in ((HISTORY, 1), (IMPORTANCE, 2)):
        path = folder / name
        if len(complete) < needed:
            lines.append(f"{name}: not drawn, it needs {needed} completed trial{'s' * (needed > 1)}")
            continue
        try:
            axes, note = draw(study, name)
        except (ValueError, RuntimeError) as error:  # e.g. importance when no parameter varied
            lines.append(f"{name}: not drawn ({error})")
            continue
        figure = axes.figure
        figure.set_size_inches(8, 5)
        try:
            atomic_write(path, lambda stream: figure.savefig(stream, dpi=120, bbox_inches="tight", format="png"),
                         overwrite=True)
        except OSError as error:
            lines.append(f"{path}: not written, {write_failure(error)}")
        else:
            lines.append(f"{path}{f' ({note})' if note else ''}")
        finally:
            pyplot.close(figure)
    return lines


def draw(study: optuna.Study, name: str) -> tuple:
    """Optuna's plot `name` (HISTORY or IMPORTANCE) of the study, as matplotlib axes, and a note on it (or "")
    that is also in its title: the history counts whole trials; importances from few trials are not yet
    meaningful."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    from matplotlib.ticker import MaxNLocator
    from optuna.visualization.matplotlib import plot_optimization_history, plot_param_importances

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna's matplotlib plots are "experimental"
        axes = (plot_optimization_history if name == HISTORY else plot_param_importances)(study)
    note = ""
    if name == HISTORY:
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # trial numbers, never 2.5
    else:
        finished = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        if finished < MEANINGFUL:
            note = f"from {finished} finished trials: not yet meaningful, wait for {MEANINGFUL} or more"
            title = axes.get_title(loc="left") or axes.get_title()  # Optuna's is on the left
            axes.set_title(f"{title}\n({note})", loc="left")
    return axes, note
