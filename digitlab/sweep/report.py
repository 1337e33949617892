"""`digitlab report lightning_logs/sweeps/NAME`: a sweep's trials (number, state, objective, parameters), best
first, read from its study. The sweep folder's `sweep.yaml` says where the study is; nothing is written.

The sweep extends the report (`digitlab.report`) with its folders (`SWEEP_FOLDERS`): `report_command` is
`digitlab report`, knowing sweep folders.

A PostgreSQL study's URL is kept there without its password: the report connects with libpq's usual
sources for it (the PGPASSWORD environment variable, ~/.pgpass).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import yaml

from digitlab.config.bounded_yaml import load_yaml_file
from digitlab.errors import UserError
from digitlab.report.columns import cell, duration
from digitlab.report.command import FolderKind
from digitlab.report.command import report_command as report_runs
from digitlab.utils.atomic import atomic_write_text
from digitlab.utils.tables import csv_text, format_table

MARKER = "sweep.yaml"
STATE_ORDER = {"COMPLETE": 0, "PRUNED": 1, "RUNNING": 2, "WAITING": 3, "FAIL": 4}


def is_sweep_folder(path: Path) -> bool:
    return (path / MARKER).is_file()


def write_marker(folder: Path, content: dict[str, Any]) -> None:
    """`sweep.yaml`: the sweep's name, storage (no password) and command, for the report and for people."""
    atomic_write_text(folder / MARKER, yaml.safe_dump(content, sort_keys=False, width=1000), overwrite=True)


def sweep_report(folder: Path, style: str) -> str:
    """The trials of the sweep in `folder` as a ``table``, ``markdown`` or ``csv``."""
    study = _load_study(folder)
    return format_trials(study, folder, style)


SWEEP_FOLDERS = FolderKind("a sweep's folder (lightning_logs/sweeps/NAME: its trials, best first)",
                           is_sweep_folder, sweep_report)


def report_command(args: list[str]) -> None:
    """`digitlab report`, which also reports sweep folders."""
    report_runs(args, [SWEEP_FOLDERS])


def format_trials(study: Any, folder: Path, style: str) -> str:
    identity = study.user_attrs.get("digitlab_sweep", {})
    objective = identity.get("objective", "value")
    maximize = study.direction.name == "MAXIMIZE"
    trials = study.get_trials(deepcopy=False)
    keys = list(identity.get("space", {})) or sorted({key for trial in trials for key in trial.params})

    def objective_value(trial: Any) -> Optional[float]:  # a pruned or failed trial's latest report
        if trial.value is not None:
            return trial.value
        return trial.intermediate_values[max(trial.intermediate_values)] if trial.intermediate_values else None

    def order(trial: Any) -> tuple:
        value = objective_value(trial)
        return (STATE_ORDER.get(trial.state.name, 5), value is None,
                0 if value is None else -value if maximize else value, trial.number)

    rows = []
    for trial in sorted(trials, key=order):
        seconds = ((trial.datetime_complete - trial.datetime_start).total_seconds()
                   if trial.datetime_complete and trial.datetime_start else None)
        rows.append([trial.number, trial.state.name, objective_value(trial), *(trial.params.get(k) for k in keys),
                     trial.user_attrs.get("validations"), seconds, _run(trial, folder)])
    if style == "csv":
        return csv_text(["trial", "state", objective, *keys, "validations", "wall_time_s", "run"], rows)
    formats = [str, str, "{:.4f}".format, *([_value] * len(keys)), str, duration, str]
    headers = ["trial", "state", objective, *short_names(keys), "validations", "wall time", "run"]
    cells = [[cell(value, shown) for value, shown in zip(row, formats)] for row in rows]
    numeric = [all(row[i] is None or isinstance(row[i], (int, float)) and not isinstance(row[i], bool) for row in rows)
               for i in range(len(headers))]
    title = f"Sweep {study.study_name}: {len(trials)} trials, best {objective} first\n"
    return title + ("\n" if style == "markdown" else "") + format_table(headers, cells, numeric, style)


def short_names(keys: list[str]) -> list[str]:
    """The shortest unique dotted ending of each key: model.init_args.optimizer.init_args.lr -> lr."""
    names = []
    for key in keys:
        parts = key.split(".")
        for length in range(1, len(parts) + 1):
            ending = ".".join(parts[-length:])
            if sum(other == ending or other.endswith("." + ending) for other in keys) == 1:
                break
        names.append(ending)
    return names


def _run(trial: Any, folder: Path) -> str:
    run = trial.user_attrs.get("run") or {}
    path = Path(run.get("folder", ""))
    if path.parent == folder.resolve():
        return path.name
    return f"{run.get('host', '?')}:{path}" if run else "—"


def _value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _load_study(folder: Path) -> Any:
    marker = load_yaml_file(folder / MARKER, "sweep marker")
    if not isinstance(marker, dict) or "name" not in marker or "storage" not in marker:
        raise UserError(f"{folder / MARKER} does not say which study this sweep is (name, storage). It is written "
                        "by `digitlab sweep`; run the sweep command again to rewrite it.")
    import optuna
    import sqlalchemy

    from digitlab.sweep.storage import DEFAULT_DATABASE, shown, storage_url

    url = marker["storage"]
    url = storage_url(None, folder) if url == DEFAULT_DATABASE else storage_url(url, folder)
    try:
        storage = optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"connect_timeout": 5}}
                                             if url.startswith("postgresql") else None, skip_table_creation=True)
        return optuna.load_study(study_name=marker["name"], storage=storage)
    except (sqlalchemy.exc.SQLAlchemyError, KeyError) as error:
        reason = " ".join(str(getattr(error, "orig", None) or error).split("(Background on")[0].split())[:300]
        raise UserError(f"Cannot read the study of the sweep in {folder} ({shown(url)}, study "
                        f"'{marker['name']}'): {reason}.") from None
