"""Several `digitlab sweep` workers on one PostgreSQL study: a real server, started here in a temporary folder on
a loopback port. The trials are shared out exactly, and a worker killed mid-trial has its trial failed by the
heartbeat and retried, with the same values, by the other worker."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from digitlab.sweep.report import report_command
from digitlab.sweep.storage import storage_url
from postgres_server import requires_postgres
from sweep_helpers import Worker, fit_args, load_study, running_trial_of, states, wait_until, write_noisy_mnist, \
    write_sweep_file

pytestmark = requires_postgres


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_noisy_mnist(tmp_path_factory.mktemp("data"), train=600)


@pytest.fixture
def workers():
    started: list[Worker] = []
    yield started
    for worker in started:  # a failed test must not leave a worker training
        worker.stop()


def test_two_workers_share_one_sweep_exactly(postgres, data, tmp_path, workers, capsys):
    args = ["--sweep", str(write_sweep_file(tmp_path / "sweep.yaml", trials=4)), "--name", "shared",
            "--storage", postgres, *fit_args(data)]
    # One working folder, so one lightning_logs: the workers must never collide on a run folder.
    workers += [Worker(args, tmp_path / "cwd", label) for label in ("first", "second")]
    for worker in workers:
        assert worker.wait() == 0, worker.output()
        assert "Traceback" not in worker.output()
    study = load_study(storage_url(postgres, tmp_path), "shared")
    assert sorted(states(study)) == list(range(4))  # every trial number once, and no more trials than asked
    assert set(states(study).values()) <= {"COMPLETE", "PRUNED"}  # none left RUNNING or WAITING
    folder = tmp_path / "cwd" / "lightning_logs" / "sweeps" / "shared"
    assert sorted(path.name for path in folder.glob("trial_*")) == [f"trial_{n}" for n in range(4)]
    for trial in study.trials:
        run = folder / f"trial_{trial.number}"
        assert trial.user_attrs["run"]["folder"] == str(run.resolve())
        assert len(list(run.glob("events.out.tfevents.*"))) == 1 and (run / "config.yaml").is_file()
    ran_by = {trial.user_attrs["run"]["pid"] for trial in study.trials}
    assert ran_by == {worker.pid for worker in workers}  # both took trials
    assert (folder / "best.yaml").is_file() and "postgresql" in (folder / "sweep.yaml").read_text()
    report_command([str(folder), "--format", "csv"])  # finds the PostgreSQL study from sweep.yaml
    rows = capsys.readouterr().out.splitlines()[1:]
    assert sorted(int(row.split(",")[0]) for row in rows) == list(range(4))


def test_a_killed_workers_trial_is_failed_by_the_heartbeat_and_retried(postgres, data, tmp_path, workers):
    # Trials long enough (20 epochs) to be caught running; the survivor starts once the victim is killed, so
    # that it cannot take both trials before the victim claims one.
    args = ["--sweep", str(write_sweep_file(tmp_path / "sweep.yaml", trials=2, pruner="none", max_epochs=20)),
            "--name", "killed", "--storage", postgres, *fit_args(data)]
    url = storage_url(postgres, tmp_path)
    victim = Worker(args, tmp_path / "cwd", "victim")
    workers.append(victim)
    # The study is read once a trial's folder exists: before, a worker may be creating its tables, and a reader
    # would create them too (Optuna's storage does), which fails one of the two.
    trials = tmp_path / "cwd" / "lightning_logs" / "sweeps" / "killed"
    started = lambda: load_study(url, "killed") if any(trials.glob("trial_*")) else None  # noqa: E731
    killed = wait_until(running_trial_of(started, victim.pid), victim)
    victim.process.send_signal(signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL
    survivor = Worker(args, tmp_path / "cwd", "survivor")
    workers.append(survivor)
    assert survivor.wait() == 0, survivor.output()

    study = load_study(url, "killed")
    assert states(study)[killed.number] == "FAIL"
    [retry] = [trial for trial in study.trials if trial.system_attrs.get("failed_trial") == killed.number]
    assert retry.state.name == "COMPLETE" and retry.params == killed.params
    assert retry.user_attrs["run"]["pid"] == survivor.pid
    assert sorted(states(study).values()) == ["COMPLETE"] * 2 + ["FAIL"]  # the retry took the failed trial's place
