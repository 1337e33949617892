"""examples/cluster/sweep-worker.sh as users run it: two workers on this machine (on CPUs here, as if it had two
GPUs) join one sweep whose study is in a real PostgreSQL server, and share its trials out exactly: every trial once,
each in its own run folder, never more trials than asked."""

from __future__ import annotations

import subprocess
from collections import Counter

from cluster_jobs import clean_environment
from conftest import REPO
from digitlab.sweep.report import report_command
from digitlab.sweep.storage import storage_url
from postgres_server import requires_postgres
from sweep_helpers import MLP, fit_args, load_study, states, write_noisy_mnist, write_sweep_file

pytestmark = requires_postgres  # and slow: the `postgres` fixture starts a server (tests/conftest.py)

SCRIPT = REPO / "examples" / "cluster" / "sweep-worker.sh"


def test_two_workers_of_the_script_share_one_postgresql_sweep(postgres, tmp_path, capsys):
    data = write_noisy_mnist(tmp_path / "data", train=600)
    # Trials of 4 epochs, none pruned: long enough that a worker which starts a little later still gets some.
    sweep = write_sweep_file(tmp_path / "sweep.yaml", trials=4, max_epochs=4, pruner="none")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    env = clean_environment({"STORAGE": postgres, "CONFIG": MLP, "SWEEP": str(sweep), "WORKERS": "2",
                             "ACCELERATOR": "cpu"})
    run_options = fit_args(data)[2:]  # without fit_args' own --config: the script passes CONFIG
    result = subprocess.run(["bash", str(SCRIPT), "--name", "script", *run_options], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    study = load_study(storage_url(postgres, cwd), "script")
    assert sorted(states(study)) == list(range(4))  # every trial number once, no more than asked
    assert set(states(study).values()) == {"COMPLETE"}
    workers = Counter(trial.user_attrs["run"]["pid"] for trial in study.trials)
    assert len(workers) == 2, workers  # both workers took trials
    # One working folder, so one lightning_logs: the workers must never collide on a run folder.
    folder = cwd / "lightning_logs" / "sweeps" / "script"
    assert sorted(path.name for path in folder.glob("trial_*")) == [f"trial_{n}" for n in range(4)]
    for trial in study.trials:
        run = folder / f"trial_{trial.number}"
        assert trial.user_attrs["run"]["folder"] == str(run.resolve())
        assert len(list(run.glob("events.out.tfevents.*"))) == 1 and (run / "config.yaml").is_file()
    assert (folder / "best.yaml").is_file() and "postgresql" in (folder / "sweep.yaml").read_text()
    report_command([str(folder), "--format", "csv"])  # finds the PostgreSQL study from sweep.yaml
    rows = capsys.readouterr().out.splitlines()[1:]
    assert sorted(int(row.split(",")[0]) for row in rows) == list(range(4))
