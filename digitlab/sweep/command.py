"""`digitlab sweep --sweep FILE [--trials N] [--timeout S] [--storage URL] [--name NAME] [--verbose] FIT_ARGS...`

One worker: it claims trials from the study until the study has its `--trials` (the total over all workers
and all runs of the command), runs each as a `digitlab fit` in this process, and waits for trials still
running elsewhere, which may fail and come back to be retried. Then it writes the sweep's results.

It says one line per trial as the trial ends; a trial's own output (progress bar, model summary, Lightning's
information lines) shows with --verbose only.
"""

from __future__ import annotations

import re
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Optional

import optuna
from digitlab.config.option_checks import OptionParser
from digitlab.errors import StopSignal, Stopped, UserError
from digitlab.runs.folders import check_runs_folder
from digitlab.sweep.progress import trial_line
from digitlab.sweep.report import format_trials, write_marker
from digitlab.sweep.results import write_results
from digitlab.sweep.run_config import load_run_config
from digitlab.sweep.storage import (
    COUNTED,
    DEFAULT_DATABASE,
    Claim,
    WAIT,
    claim_trial,
    load_study,
    open_storage,
    shown,
    storage_url,
)
from digitlab.sweep.sweep_file import load_sweep_file
from digitlab.sweep.trial import SweepSetup, run_and_tell
from digitlab.training.run import quiet_lightning_notices
from digitlab.utils import stop_requests

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
MAX_NAME = 100  # a folder name and a study name: well under the 255 bytes a file name may have


def sweep_command(args: list[str]) -> None:
    options, fit_args = sweep_parser().parse_known_args(args)
    sweep = load_sweep_file(options.sweep)
    total = options.trials or sweep.trials
    name = options.name or sweep.path.stem
    if len(name) > MAX_NAME:
        raise UserError(f"The sweep name {name[:40]!r}... is {len(name)} characters long; it names a folder and a "
                        f"study, and may have at most {MAX_NAME}. Pass a shorter --name NAME.")
    if not NAME.fullmatch(name):
        raise UserError(f"The sweep name {name!r} must be letters, digits, '.', '_' or '-' (it names a folder and "
                        "a study). Pass --name NAME.")
    quiet_lightning_notices()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # this command says what happens, once
    run_config = load_run_config(fit_args, sweep)
    folder = run_config.sweeps_root() / name
    storage, study = _open_study(options.storage, folder, name, sweep)
    kept_in = DEFAULT_DATABASE if options.storage is None else shown(storage.url)  # never the password
    write_marker(folder, {"name": name, "storage": kept_in, "command": _command_line(args)})
    setup = SweepSetup(name, folder, sweep, run_config, options.verbose)
    done = len(study.get_trials(deepcopy=False, states=COUNTED))
    _say(f"sweep {name}: {total} trials in all ({done} already counted), {sweep.objective} "
         f"({sweep.direction}), study in {folder / kept_in if options.storage is None else kept_in}, runs in {folder}/")
    try:
        mine = _work(study, storage, setup, total, options.timeout)
    except (Stopped, StopSignal) as stop:  # in a trial's fit (stopped after its batch), or between trials
        _stopped(f"sweep {name} stopped by {_short(stop.exit_code)}; the running trial (if any) is marked FAIL and "
                 "does not count. Run the same command again to continue the sweep.", stop.exit_code)
    try:
        print(format_trials(study, folder, "table"))
        for line in write_results(study, folder, sweep.objective, bool(run_config.config.get("test_after_fit", True))):
            _say(line)
    except StopSignal as stop:
        _stopped(f"sweep {name} stopped by {_short(stop.exit_code)} while writing its results; every trial is in the "
                 "study, and no results file is half-written. Run the same command again to write them.",
                 stop.exit_code)
    overheads = [t.duration.total_seconds() - t.user_attrs["fit_seconds"] for t in mine
                 if t.duration is not None and "fit_seconds" in t.user_attrs]
    if overheads and options.verbose:
        _say(f"per-trial overhead (a trial's wall time outside trainer.fit): median {statistics.median(overheads):.2f} "
             f"s over this worker's {len(overheads)} trials")


def _open_study(storage_option: Optional[str], folder: Path, name: str, sweep) -> tuple:
    """The storage and the sweep's study. Nothing is created before every check has passed, except the sweep
    folder that a new SQLite database needs."""
    check_runs_folder(folder)
    new_database = storage_option is None and not (folder / DEFAULT_DATABASE).exists()
    if new_database:
        _refuse_foreign_trials(folder, name)
        folder.mkdir(parents=True, exist_ok=True)
    storage = open_storage(storage_url(storage_option, folder), sweep)
    if not new_database and not _study_exists(storage, name):
        _refuse_foreign_trials(folder, name)
    study = load_study(storage, name, sweep)
    folder.mkdir(parents=True, exist_ok=True)
    return storage, study


def _work(study: optuna.Study, storage, setup: SweepSetup, total: int, timeout: Optional[float]) -> list:
    """Claim and run trials until the study is done (or `timeout` seconds have passed); this worker's trials."""
    started, mine, waiting = time.monotonic(), [], False
    while timeout is None or time.monotonic() - started < timeout:
        with stop_requests.deferred(raise_at_end=False):  # a claimed trial is told how it ended: see run_and_tell
            claim = claim_trial(study, storage, total)
        if not isinstance(claim, Claim):
            stop_requests.raise_pending()
        if claim is None:
            return mine
        if claim == WAIT:
            if not waiting:
                _say(f"sweep {setup.name}: all {total} trials are taken; waiting for those running elsewhere (a "
                     "worker that died has its trial retried here)")
            waiting = True
            time.sleep(setup.sweep.heartbeat_interval)
            continue
        waiting = False
        trial = run_and_tell(study, claim, setup)
        mine.append(trial)
        _say(trial_line(trial, study.get_trials(deepcopy=False), total, setup.sweep.objective, setup.sweep.maximize))
        if setup.verbose:
            _say(f"  {_values(trial)} -> {setup.folder / f'trial_{trial.number}'}")
    _say(f"sweep {setup.name}: --timeout {timeout:g} s reached; run the command again to continue")
    return mine


def _values(trial: optuna.trial.FrozenTrial) -> str:
    return ", ".join(f"{key.rsplit('.', 1)[-1]}={value:.4g}" if isinstance(value, float) else
                     f"{key.rsplit('.', 1)[-1]}={value}" for key, value in trial.params.items())


def _study_exists(storage, name: str) -> bool:
    try:
        storage.get_study_id_from_name(name)
    except KeyError:
        return False
    return True


def _refuse_foreign_trials(folder: Path, name: str) -> None:
    """A new study must not adopt run folders left by an earlier sweep of the same name."""
    if folder.is_dir() and any(folder.glob("trial_*")):
        raise UserError(f"{folder} holds trial folders of an earlier sweep named '{name}', but its study is not in "
                        "this storage. Give this sweep another --name, or move that folder away.")


def _stopped(message: str, code: int) -> None:
    print(f"digitlab: {message}", file=sys.stderr)
    sys.exit(code)


def _short(exit_code: int) -> str:
    return "Ctrl-C" if exit_code == 130 else "SIGTERM"


def _say(line: str) -> None:
    print(line, flush=True)


def _command_line(args: list[str]) -> str:
    """The command as typed, with a --storage password hidden."""
    shown_args = [shown(arg) if previous == "--storage" else arg for previous, arg in zip(["", *args], args)]
    return shlex.join(["digitlab", "sweep", *shown_args])


def sweep_parser() -> OptionParser:
    parser = OptionParser(
        "sweep",  # no option prefixes: every other option belongs to the run config, never guess at one
        description="Tune a model with Optuna: every trial is a `digitlab fit` with the run config given by the "
        "other options (--config FILE, --data.data_dir DIR, --trainer.max_epochs N, ...; see `digitlab fit "
        "--help`) and the trial's values from the search space. Runs go to lightning_logs/sweeps/NAME/trial_N/.",
        epilog="Several workers (one per GPU, or on several machines) join one sweep by running the same command "
        "with the same --storage postgresql://... . Running the command again continues the sweep.",
    )
    parser.add_argument("--sweep", type=Path, required=True, metavar="FILE",
                        help="the sweep file: search space, objective, sampler, pruner (configs/sweeps/*.yaml)")
    parser.add_argument("--trials", type=int, metavar="N",
                        help="trials in the whole sweep, over all workers and runs (default: the sweep file's)")
    parser.add_argument("--timeout", type=float, metavar="SECONDS",
                        help="claim no new trial after this many seconds (the running one finishes)")
    parser.add_argument("--storage", metavar="URL",
                        help="postgresql://USER:PASSWORD@HOST:PORT/DB to share the sweep between workers (default: "
                        "a SQLite file in the sweep's folder)")
    parser.add_argument("--name", metavar="NAME", help="the sweep's name (default: the sweep file's name)")
    parser.add_argument("--verbose", action="store_true",
                        help="show each trial's own output (progress bar, model summary, Lightning's lines), its "
                        "values and folder, and the per-trial overhead; by default one line per trial")
    return parser
