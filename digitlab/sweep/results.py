"""What a sweep leaves in its folder after each run of the command: the best trial's config as `best.yaml`,
and Optuna's pictures of the optimisation history and of the parameters' importance.

Each file is written to a temporary name in the same folder, then renamed over the sweep's own earlier one:
a reader never sees half a file, and nothing but the sweep's own outputs is replaced.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

BEST = "best.yaml"
HISTORY = "history.png"
IMPORTANCE = "importance.png"


def write_results(study: optuna.Study, folder: Path, objective: str, test_after_fit: bool) -> list[str]:
    """Write what can be written; return one line for each file (or why it was not written)."""
    lines = []
    best = best_trial(study)
    if best is None or "config" not in best.user_attrs:
        lines.append(f"{BEST}: not written, no trial has completed yet")
    else:
        path = folder / BEST
        with replacing(path) as temporary:
            temporary.write_text(best_config(best, study.study_name, objective, test_after_fit))
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
    config = yaml.safe_load(trial.user_attrs["config"])
    config["test_after_fit"] = test_after_fit
    header = (f"# Trial {trial.number} of sweep {sweep}: the best, with {objective} {trial.value} "
              f"({trial.user_attrs.get('validations', '?')} validations).\n"
              "# Replay: digitlab fit --config THIS_FILE (add --trainer.max_epochs N to train longer).\n")
    return header + yaml.safe_dump(config, sort_keys=False)


def _plots(study: optuna.Study, folder: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    from matplotlib import pyplot
    from optuna.visualization.matplotlib import plot_optimization_history, plot_param_importances

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    lines = []
    for name, plot, needed in ((HISTORY, plot_optimization_history, 1), (IMPORTANCE, plot_param_importances, 2)):
        path = folder / name
        if len(complete) < needed:
            lines.append(f"{name}: not drawn, it needs {needed} completed trial{'s' * (needed > 1)}")
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna's matplotlib plots are "experimental"
            try:
                axes = plot(study)
            except (ValueError, RuntimeError) as error:  # e.g. importance when no parameter varied
                lines.append(f"{name}: not drawn ({error})")
                continue
        with replacing(path) as temporary:
            axes.figure.set_size_inches(8, 5)
            axes.figure.savefig(temporary, dpi=120, bbox_inches="tight", format="png")
        pyplot.close(axes.figure)
        lines.append(f"{path}")
    return lines


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary path next to `path`, renamed to `path` once the block has written it."""
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        umask = os.umask(0)
        os.umask(umask)
        temporary.chmod(0o666 & ~umask)  # as an ordinary new file, not mkstemp's private 0600
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
