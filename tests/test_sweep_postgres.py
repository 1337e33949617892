"""Several `digitlab sweep` workers on one PostgreSQL study: a real server, started here in a temporary folder on
a loopback port. A worker killed mid-trial has its trial failed by the heartbeat and retried, with the same values,
by the other worker. (Two workers sharing the trials out exactly: tests/test_sweep_worker_template.py, through the
script users copy.)"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

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
