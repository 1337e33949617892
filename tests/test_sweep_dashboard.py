"""optuna-dashboard on a real sweep's storage, started as docs/sweeps.md says: it lists the study, and its trials
as the study holds them, through its HTTP API (`/api/studies`, `/api/studies/<id>`)."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

import pytest

from ports import free_port
from sweep_helpers import fit_args, load_study, write_noisy_mnist, write_sweep_file
from waiting import running, wait_for

pytest.importorskip("optuna_dashboard", reason="optuna-dashboard is not installed (it is in the dev extra)")
DASHBOARD = Path(sys.executable).with_name("optuna-dashboard")
NAME = "dashboard-test"


def get(url: str) -> Optional[dict]:
    """The JSON at `url`; None while nothing answers there yet."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.load(response)
    except (urllib.error.URLError, ConnectionError):
        return None


@pytest.mark.slow  # an optuna-dashboard server in a process of its own
def test_optuna_dashboard_lists_a_sweeps_study_and_its_trials(tmp_path, digitlab_main):
    data = write_noisy_mnist(tmp_path / "data", train=200)
    sweep_file = write_sweep_file(tmp_path / "sweep.yaml", trials=2)
    result = digitlab_main("sweep", "--sweep", str(sweep_file), "--name", NAME, *fit_args(data), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    storage = f"sqlite:///{tmp_path / 'lightning_logs' / 'sweeps' / NAME / 'study.db'}"
    study = load_study(storage, NAME)

    # optuna-dashboard cannot report a port it chose itself: take one the system says is free, and try another
    # if something else bound it first (the server then exits).
    for attempt in range(3):
        port, log = free_port(), tmp_path / f"dashboard-{attempt}.log"
        with open(log, "w") as output:
            server = subprocess.Popen([str(DASHBOARD), storage, "--host", "127.0.0.1", "--port", str(port)],
                                      stdout=output, stderr=subprocess.STDOUT)
        try:
            base = f"http://127.0.0.1:{port}"
            try:
                listed = wait_for(lambda: get(f"{base}/api/studies"), 60, "optuna-dashboard's /api/studies",
                                  alive=running(server), interval=0.2)
            except AssertionError:
                if "Address already in use" in log.read_text(errors="replace") and attempt < 2:
                    continue
                raise AssertionError(f"optuna-dashboard did not answer:\n{log.read_text(errors='replace')[-3000:]}")
            [summary] = [s for s in listed["study_summaries"] if s["study_name"] == NAME]
            detail = get(f"{base}/api/studies/{summary['study_id']}")
            break
        finally:
            server.terminate()
            server.wait(timeout=30)

    assert detail["name"] == NAME and detail["directions"] == ["maximize"]
    shown = {trial["number"]: trial for trial in detail["trials"]}
    assert sorted(shown) == [0, 1]
    for trial in study.trials:
        assert shown[trial.number]["state"] == trial.state.name.capitalize()
        assert {p["name"] for p in shown[trial.number]["params"]} == set(trial.params)
    if any(trial.state.name == "COMPLETE" for trial in study.trials):
        assert [best["number"] for best in detail["best_trials"]] == [study.best_trial.number]
