"""Where a sweep's study lives (one SQLite file per sweep, or a PostgreSQL database that many workers share),
and how workers take turns to claim its trials so that the study runs exactly the requested number."""

from __future__ import annotations

import fcntl
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional, Union

import optuna
import sqlalchemy
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from digitlab.errors import UserError
from digitlab.sweep.sweep_file import SweepFile
from digitlab.training.compat import start_heartbeat

if TYPE_CHECKING:
    from digitlab.training.compat import TrialHeartbeat

CONNECT_TIMEOUT_S = 5
IDENTITY_ATTR = "digitlab_sweep"  # the study's user attribute holding its search space (SweepFile.identity)
# Trials that count towards --trials: finished, running, or waiting to be retried. A FAIL (Ctrl-C, a crash, a
# worker killed) does not count: its place goes to a new trial, or to its retry.
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
DEFAULT_DATABASE = "study.db"
SQLITE_HEADER = b"SQLite format 3\0"  # the first 16 bytes of every SQLite database file


def storage_url(url: Optional[str], folder: Path) -> str:
    """The SQLAlchemy URL: the sweep folder's SQLite file by default; `postgresql://` uses psycopg 3."""
    if url is None:
        return f"sqlite:///{(folder / DEFAULT_DATABASE).resolve()}"
    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url[len(scheme):]
    return url


def shown(url: str) -> str:
    """The URL without its password, for messages and for files."""
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True).replace(":***@", "@")
    except sqlalchemy.exc.ArgumentError:
        return "(a malformed URL)"


def open_storage(url: str, sweep: SweepFile) -> RDBStorage:
    """Connect (within seconds, or a clear error), with heartbeats: a killed worker's trial is failed after
    `grace_period` and retried, with its parameters, by the next worker that claims a trial."""
    try:
        backend = sqlalchemy.engine.make_url(url).get_backend_name()
    except sqlalchemy.exc.ArgumentError:
        backend = None
    if backend not in ("sqlite", "postgresql") or url.startswith("sqlite:///:memory:") or url == "sqlite://":
        raise UserError(f"--storage {shown(url)} is not a storage digitlab sweeps can use: give "
                        "postgresql://USER:PASSWORD@HOST:PORT/DATABASE (several workers) or sqlite:///FILE.db "
                        "(one machine); without --storage the sweep keeps a SQLite file in its folder.")
    if backend == "sqlite":
        check_sqlite_file(url)
    connect_args = {"connect_timeout": CONNECT_TIMEOUT_S} if backend == "postgresql" else {"timeout": 60}
    engine_kwargs = {"connect_args": connect_args, "pool_pre_ping": True}
    try:
        with _creating_tables(url, engine_kwargs), warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats are "experimental"
            return RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=sweep.heartbeat_interval,
                grace_period=sweep.grace_period,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3),
            )
    except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, ImportError, OSError) as error:
        reason = " ".join(str(getattr(error, "orig", None) or error).split("(Background on")[0].split())
        reason = reason[:400].rstrip(".") + ("" if reason[:400].endswith(("?", "!")) else ".")
        hint = ("Check that its folder is writable by you, or leave out --storage to keep the study in the sweep's "
                "folder (the default)." if backend == "sqlite" else
                "Check that the server runs and accepts connections from this machine (host, port, user, password, "
                "database name), or leave out --storage to keep the study in a SQLite file.")
        raise UserError(f"Cannot open the sweep's storage {shown(url)}: {reason} {hint}") from None


def check_sqlite_file(url: str) -> None:
    """Refuse a SQLite path that is not a database (or a new one) before SQLAlchemy opens it: SQLite would
    fail only after the sweep had made its lock file beside it, and might write into a file it does not own."""
    database = sqlalchemy.engine.make_url(url).database
    if not database:
        return
    path = Path(database)
    given = f"The sweep's storage {shown(url)} names {path}"
    if not path.parent.is_dir():
        what = "is not a folder" if path.parent.exists() else "does not exist"
        raise UserError(f"{given}, but its folder {path.parent} {what}. Create the folder first, or give a "
                        "database path in an existing folder (or leave out --storage).")
    if path.is_dir():
        raise UserError(f"{given}, which is a folder, not a database file. Give a file path such as "
                        f"{path / DEFAULT_DATABASE}, or leave out --storage.")
    if not path.exists():
        return  # a new database: SQLite creates it
    if not path.is_file():
        raise UserError(f"{given}, which is not a regular file (a device, a FIFO or a socket), so it cannot hold "
                        "a database. Give the path of an SQLite database file, or of a new one.")
    try:
        with path.open("rb") as stream:
            header = stream.read(len(SQLITE_HEADER))
    except OSError as error:
        raise UserError(f"{given}, which cannot be read ({error.strerror or error}). Give the path of an "
                        "SQLite database file you can read and write, or of a new one.") from None
    if header and header != SQLITE_HEADER:  # an empty file is a new database to SQLite
        raise UserError(f"{given}, which is not an SQLite database (it does not start with SQLite's header), and "
                        "digitlab never writes into a file it did not make. Give the path of a sweep's database, "
                        "or of a new file.")


@contextmanager
def _creating_tables(url: str, engine_kwargs: dict) -> Iterator[None]:
    """Workers starting together on a new database would race to create Optuna's tables (the loser fails
    with UniqueViolation): one at a time."""
    engine = sqlalchemy.create_engine(url, **engine_kwargs)
    try:
        with database_lock(engine, "digitlab.sweep:tables"):
            yield
    finally:
        engine.dispose()


def load_study(storage: RDBStorage, name: str, sweep: SweepFile) -> optuna.Study:
    """The sweep's study, created on first use; refused when it was started with another search space."""
    with claim_lock(storage, name):
        study = optuna.create_study(storage=storage, study_name=name, direction=sweep.direction,
                                    load_if_exists=True, sampler=sweep.make_sampler(), pruner=sweep.make_pruner())
        identity = sweep.identity()
        recorded = study.user_attrs.get(IDENTITY_ATTR)
        if recorded is None:
            study.set_user_attr(IDENTITY_ATTR, identity)
        elif recorded["fingerprint"] != identity["fingerprint"]:
            raise UserError(f"The sweep '{name}' in {shown(storage.url)} was started with another search space or "
                            f"objective ({_differences(recorded, identity)}), and a sweep's trials must be "
                            "comparable. Give this one another --name, or use the sweep file it was started with.")
    return study


def _differences(recorded: dict, identity: dict) -> str:
    changes = [f"{key}: {recorded[key]} -> {identity[key]}" for key in ("objective", "direction")
               if recorded[key] != identity[key]]
    old, new = recorded["space"], identity["space"]
    changes += [f"{key} {'added' if key not in old else 'removed' if key not in new else 'changed'}"
                for key in sorted(old.keys() | new.keys()) if old.get(key) != new.get(key)]
    return "; ".join(changes)


@contextmanager
def claim_lock(storage: RDBStorage, name: str) -> Iterator[None]:
    """One worker at a time counts the study's trials and claims the next."""
    with database_lock(storage.engine, f"digitlab.sweep:{name}"):
        yield


@contextmanager
def database_lock(engine: sqlalchemy.engine.Engine, key: str) -> Iterator[None]:
    """A lock that dies with its holder. PostgreSQL: an advisory lock of a session (the server releases it when
    the connection drops); SQLite: a lock on a file next to the database (the kernel releases it)."""
    if engine.url.get_backend_name() == "postgresql":
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(hashtext(:key))"), {"key": key})
            try:
                yield
            finally:
                connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(hashtext(:key))"), {"key": key})
                connection.commit()
        return
    with open(f"{engine.url.database}.lock", "a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


WAIT = "wait"  # no trial to claim now, but some run elsewhere and may fail: ask again later


@dataclass
class Claim:
    trial: optuna.Trial
    heartbeat: TrialHeartbeat  # started; join it once the trial is told
    storage: RDBStorage


def claim_trial(study: optuna.Study, storage: RDBStorage, total: int) -> Union[Claim, str, None]:
    """The next trial for this worker: a retry waiting to run, or a new trial while fewer than `total` count.
    `WAIT` while the budget is taken but trials still run elsewhere; None when the study is done.

    The heartbeat starts before the lock is released, so no other worker can see the trial without one
    (Optuna never fails a running trial that has no heartbeat). It is Optuna's own heartbeat thread, the one
    `Study.optimize` runs; `optimize` itself cannot be used, as it claims a trial without asking first.
    """
    with claim_lock(storage, study.study_name), warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # Optuna expects heartbeats with Study.optimize only; here its heartbeat thread runs without it.
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
        optuna.storages.fail_stale_trials(study)  # a dead worker's trial: failed, and queued again as WAITING
        counted = study.get_trials(deepcopy=False, states=COUNTED)
        if len(counted) < total or any(t.state == TrialState.WAITING for t in counted):
            trial = study.ask()  # pops a WAITING trial first
            trial_id = storage.get_trial_id_from_study_id_trial_number(
                storage.get_study_id_from_name(study.study_name), trial.number)
            storage.record_heartbeat(trial_id)
            return Claim(trial, start_heartbeat(trial_id, storage), storage)
        return WAIT if any(t.state == TrialState.RUNNING for t in counted) else None
