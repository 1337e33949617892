"""`digitlab sweep` with its default SQLite storage, end to end on synthetic digits: trials are ordinary runs,
the median pruner stops a hopeless one, the best config replays to the same accuracy, the command continues a
sweep, Ctrl-C fails only the running trial, and every bad input is one paragraph with nothing written."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import assert_user_error, digitlab_here
from digitlab.sweep.report import report_command
from sweep_helpers import (
    Worker,
    fit_args,
    load_study,
    running_trial_of,
    states,
    wait_until,
    write_noisy_mnist,
    write_sweep_file,
)
from tensorboard_events import scalars

NAME = "mlp-test"


def files(folder: Path) -> dict[Path, float]:
    return {path: path.stat().st_mtime for path in folder.rglob("*")}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_noisy_mnist(tmp_path_factory.mktemp("data"), train=600)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, data) -> tuple[Path, Path, list[str]]:
    """A finished 4-trial sweep, run as a user would: (working folder, sweep folder, the command's arguments).
    Trials show no progress bar or model summary without the run config's asking: the sweep quiets them. What
    the command printed is in the working folder's sweep.out."""
    cwd = tmp_path_factory.mktemp("sweep")
    args = ["--sweep", str(write_sweep_file(cwd / "sweep.yaml")), "--name", NAME, *fit_args(data, quiet=False)]
    result = digitlab_here("sweep", *args, cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    (cwd / "sweep.out").write_text(result.stdout)
    return cwd, cwd / "lightning_logs" / "sweeps" / NAME, args


def study_of(folder: Path):
    """The sweep's study; None before the sweep created its database (Optuna would create an empty one)."""
    return load_study(f"sqlite:///{folder / 'study.db'}", NAME) if (folder / "study.db").is_file() else None


def test_trials_are_runs_and_a_hopeless_one_is_pruned(sweep):
    _, folder, _ = sweep
    study = study_of(folder)
    assert sorted(states(study)) == [0, 1, 2, 3]
    assert set(states(study).values()) == {"COMPLETE", "PRUNED"}
    for trial in study.trials:
        run = folder / f"trial_{trial.number}"
        config = yaml.safe_load((run / "config.yaml").read_text())
        assert config["model"]["init_args"]["lr"] == trial.params["model.init_args.lr"]
        assert config["model"]["init_args"]["hidden_size"] == trial.params["model.init_args.hidden_size"]
        assert config["trainer"]["max_epochs"] == 2  # the sweep file's budget beats configs/mlp.yaml's 8
        hparams = yaml.safe_load((run / "hparams.yaml").read_text())
        assert hparams["sweep"] == NAME and hparams["sweep_trial"] == trial.number
        assert hparams["model"] == "mlp"  # logged exactly like a fit's run: the model named in HParams
        assert (run / "checkpoints" / "last.ckpt").is_file()
        logged = scalars(run)
        # hp_metric is the best val/acc so far after each validation, never a placeholder -1.
        best_so_far = [max(logged["val/acc"][:i + 1]) for i in range(len(logged["val/acc"]))]
        assert logged["hp_metric"] == pytest.approx(best_so_far)
        assert logged["val/acc"] == [trial.intermediate_values[step] for step in sorted(trial.intermediate_values)]
        if trial.state.name == "PRUNED":  # stopped at the first validation below the median, and says so
            assert len(logged["val/acc"]) == 1 and logged["sweep/pruned"][-1] == 1.0
            assert trial.params["model.init_args.lr"] == 1.0e-6
        else:
            assert len(logged["val/acc"]) == 2 and trial.value == max(logged["val/acc"])
            assert logged["sweep/pruned"] == [0.0]
    assert {path.name for path in folder.iterdir()} >= {"best.yaml", "history.png", "importance.png", "sweep.yaml"}
    for picture in ("history.png", "importance.png"):
        assert (folder / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_sweep_says_one_line_per_trial_and_nothing_of_the_trials_own(sweep):
    cwd, folder, _ = sweep
    said = (cwd / "sweep.out").read_text()
    study = study_of(folder)
    lines = [line for line in said.splitlines() if line.startswith("trial ") and " · " in line]
    assert [line.split(" · ")[0] for line in lines] == [f"trial {n} ({n + 1}/4 done)" for n in range(4)], said
    for line, trial in zip(lines, study.trials):
        outcome = line.split(" · ")[1]
        if trial.state.name == "COMPLETE":
            assert outcome == f"val/acc {trial.value:.4f}"
        else:
            assert outcome.startswith("pruned after 1 validation (val/acc ")
    best = study.best_trial
    assert lines[-1].endswith(f" · best {best.value:.4f} (trial {best.number}) · "
                              f"{list(states(study).values()).count('PRUNED')} pruned · "
                              f"{study.trials[-1].duration.total_seconds():.0f} s")
    for noise in ("Epoch", "Sanity Checking", "Run folder", "Validation", "per-trial overhead"):
        assert noise not in said, said
    assert "importance.png (from" in said and "not yet meaningful" in said  # 4 trials are too few


def test_best_config_replays_the_best_trial(sweep, digitlab_main):
    cwd, folder, _ = sweep
    best = study_of(folder).best_trial
    assert 0.3 < best.value < 0.95  # noisy labels: an accuracy that could differ between two runs
    config = yaml.safe_load((folder / "best.yaml").read_text())
    assert config["test_after_fit"] is True  # trials skip the test set; the replay of the winner uses it
    before = set((cwd / "lightning_logs").iterdir())
    result = digitlab_main("fit", "--config", str(folder / "best.yaml"), cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    [run] = set((cwd / "lightning_logs").iterdir()) - before
    logged = scalars(run)
    assert max(logged["val/acc"]) == best.value and "test/acc" in logged


def test_report_lists_the_trials_best_first(sweep, capsys):
    _, folder, _ = sweep
    study = study_of(folder)
    report_command([str(folder), "--format", "csv"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "trial,state,val/acc,model.init_args.hidden_size,model.init_args.lr,validations,wall_time_s,run"
    rows = [line.split(",") for line in lines[1:]]
    complete = sorted((t for t in study.trials if t.state.name == "COMPLETE"), key=lambda t: -t.value)
    assert [int(row[0]) for row in rows[:len(complete)]] == [t.number for t in complete]
    assert {row[1] for row in rows[len(complete):]} == {"PRUNED"}
    assert [row[-1] for row in rows] == [f"trial_{row[0]}" for row in rows]
    report_command([str(folder)])
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith(f"Sweep {NAME}: 4 trials") and table[1].split()[:3] == ["trial", "state", "val/acc"]


@pytest.mark.slow  # a new interpreter, to see what `report` imports
def test_the_report_of_a_sweep_imports_neither_lightning_nor_torch(sweep):
    _, folder, _ = sweep
    # The report of a sweep starts as fast as any report: without Lightning or torch.
    code = "import sys; from digitlab.cli import main; main(sys.argv[1:]); print(sorted({'lightning', 'torch'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code, "report", str(folder)], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.splitlines()[-1] == "[]", result.stderr[-3000:]


def test_rerun_continues_to_the_new_total_and_another_space_is_refused(sweep, digitlab_main, tmp_path):
    cwd, _, args = sweep
    shutil.copytree(cwd, tmp_path / "copy")
    cwd = tmp_path / "copy"
    folder = cwd / "lightning_logs" / "sweeps" / NAME
    other = write_sweep_file(cwd / "other.yaml", space={"model.init_args.lr": {"type": "float", "low": 0.01,
                                                                               "high": 0.5}})
    before = files(cwd)
    refused = digitlab_main("sweep", *[str(other) if a.endswith("sweep.yaml") else a for a in args], cwd=cwd)
    assert_user_error(refused, f"The sweep '{NAME}'", "another search space", "model.init_args.hidden_size removed",
                      "model.init_args.lr changed", "--name")
    assert files(cwd) == before

    result = digitlab_main("sweep", *args, cwd=cwd)  # the same command again: the study has its 4 trials
    assert result.returncode == 0, result.stderr[-3000:]
    assert "4 trials in all (4 already counted)" in result.stdout and "trial 4" not in result.stdout
    result = digitlab_main("sweep", *args, "--trials", "5", "--verbose", cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    # --verbose: the trial's own lines, its values and folder, and the overhead
    assert "Run folder: lightning_logs/sweeps" in result.stdout and "trial 4 (5/5 done) · " in result.stdout
    assert f"-> lightning_logs/sweeps/{NAME}/trial_4" in result.stdout and "per-trial overhead" in result.stdout
    assert sorted(states(study_of(folder))) == [0, 1, 2, 3, 4]
    assert sorted(path.name for path in folder.glob("trial_*")) == [f"trial_{n}" for n in range(5)]


@pytest.mark.slow  # a `digitlab sweep` worker process, stopped by a real Ctrl-C
def test_ctrl_c_fails_the_running_trial_and_the_next_run_continues(data, tmp_path, digitlab_main):
    # Epochs from the run config (`max_epochs: null`): the worker's trial is too long to end before the Ctrl-C
    # lands, the next run's is short.
    sweep = ["--sweep", str(write_sweep_file(tmp_path / "sweep.yaml", pruner="none", trials=1, max_epochs=None)),
             "--name", NAME]
    worker = Worker([*sweep, *fit_args(data, "--trainer.max_epochs", "1000")], tmp_path, "worker")
    folder = tmp_path / "lightning_logs" / "sweeps" / NAME
    try:
        # The study is read once a trial's folder exists: before, the worker may be creating its tables, and a
        # reader would create them too (Optuna's storage does), which fails one of the two.
        started = lambda: study_of(folder) if any(folder.glob("trial_*")) else None  # noqa: E731
        running = wait_until(running_trial_of(started, worker.pid), worker)
        worker.process.send_signal(signal.SIGINT)
        assert worker.wait() == 130, worker.output()  # as `digitlab fit` stopped by Ctrl-C
    finally:
        worker.stop()
    said = worker.output()
    assert f"sweep {NAME} stopped by Ctrl-C" in said and "Traceback" not in said, said
    study = study_of(folder)
    assert states(study)[running.number] == "FAIL", (states(study), said)
    assert study.trials[running.number].user_attrs["stopped"] == "Ctrl-C"
    assert "RUNNING" not in states(study).values()

    result = digitlab_main("sweep", *sweep, *fit_args(data, "--trainer.max_epochs", "2"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    counted = [state for state in states(study_of(folder)).values() if state != "FAIL"]
    assert counted == ["COMPLETE"]  # the failed trial does not count: a new one took its place
    assert sorted(states(study_of(folder))) == [0, 1]


def bad_space(**distribution) -> dict:
    return {"space": {"model.init_args.lr": distribution}}


@pytest.mark.parametrize("settings, extra, fragments", [
    ({"space": {"model.init_args.lr_shedule": {"type": "categorical", "choices": ["cosine"]}}}, [],
     ["model.init_args.lr_shedule is not a key of the run config", "Did you mean 'model.init_args.lr_schedule'?"]),
    (bad_space(type="float", low=0.5, high=0.1), [], ["model.init_args.lr: low (0.5) must be below high (0.1)"]),
    (bad_space(type="float", low=0.1, high=0.1), [], ["low (0.1) must be below high (0.1)"]),
    (bad_space(type="float", low=0.0, high=0.1, log=True), [], ["a log scale needs low > 0, not 0.0"]),
    (bad_space(type="categorical", choices=[]), [], ["choices must be a non-empty list"]),
    (bad_space(type="float", low=0.01, high=0.1, step=0.01, log=True), [], ["step and log cannot be combined"]),
    (bad_space(type="categorical", choices=[0.1, "fast"]), [], ["model.init_args.lr can be 'fast'", "not accept"]),
    ({"pruner": "medain"}, [], ["the pruner 'medain' is not one digitlab knows", "Did you mean 'median'?"]),
    ({"sampler": {"type": "cmaes"}}, [], ["the sampler 'cmaes' is not one digitlab knows", "tpe, random"]),
    ({"sampler": {"type": "tpe", "n_startup": 3}}, [], ["'n_startup' is not a setting of Optuna's TPESampler",
                                                        "Did you mean 'n_startup_trials'?"]),
    ({"objective": "val/loss"}, [], ["the objective val/loss needs a `direction:`"]),
    ({}, ["--storage", "postgresql://digitlab@127.0.0.1:{port}/sweeps"],
     ["Cannot open the sweep's storage postgresql+psycopg://digitlab@127.0.0.1:", "Connection refused"]),
    ({}, ["--storage", "mysql://localhost/x"], ["is not a storage digitlab sweeps can use"]),
    ({}, ["--config", "{repo}/configs/trainer/cpu_ddp.yaml"], ["runs each trial in one process", "CUDA_VISIBLE_DEVICES"]),
    ({}, ["--model.init_args.lr", "0.1"], ["model.init_args.lr is searched by the sweep file", "also set"]),
    ({}, ["--data.val_split", "0"], ["data.val_split: 0, so no trial would validate"]),
    ({}, ["--name", "../elsewhere"], ["The sweep name '../elsewhere' must be"]),
    ({}, ["--trials", "0"], ["--trials 0"]),
], ids=["unknown-key", "low-above-high", "low-equals-high", "log-from-zero", "no-choices", "log-and-step",
        "wrong-type", "unknown-pruner", "unknown-sampler", "unknown-sampler-setting", "no-direction",
        "unreachable-storage", "unknown-storage", "ddp", "searched-and-typed", "no-validation", "bad-name",
        "no-trials"])
def test_bad_input_is_one_paragraph_and_writes_nothing(settings, extra, fragments, data, tmp_path, digitlab_main,
                                                       unused_tcp_port):
    from conftest import REPO

    sweep_file = write_sweep_file(tmp_path / "sweep.yaml", **settings)
    extra = [arg.format(port=unused_tcp_port, repo=REPO) for arg in extra]
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    result = digitlab_main("sweep", "--sweep", str(sweep_file), *fit_args(data), *extra, cwd=cwd)
    assert_user_error(result, *fragments)
    assert list(cwd.iterdir()) == []  # no run folder, no sweep folder, no database
    [message] = [line for line in result.stderr.splitlines() if line.startswith("digitlab: error:")]
    assert message in result.stderr.strip().splitlines()[-1]  # the paragraph ends the output


@pytest.fixture
def unused_tcp_port():
    """A loopback port bound (so that nothing else can take it) but not listening: a connection is refused."""
    import socket

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield held.getsockname()[1]


def test_a_diverged_trial_is_pruned_and_nothing_claims_a_best(data, tmp_path, digitlab_main):
    sweep_file = write_sweep_file(tmp_path / "sweep.yaml", trials=1, space={
        "model.init_args.lr": {"type": "categorical", "choices": [1.0e8]},
        "model.init_args.lr_schedule": {"type": "categorical", "choices": ["constant"]}})
    result = digitlab_main("sweep", "--sweep", str(sweep_file), "--name", NAME, *fit_args(data), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    folder = tmp_path / "lightning_logs" / "sweeps" / NAME
    [trial] = study_of(folder).trials
    assert trial.state.name == "PRUNED" and trial.user_attrs["stopped"].startswith("The training loss became")
    assert "best.yaml: not written, no trial has completed yet" in result.stdout
    assert not (folder / "best.yaml").exists() and not (folder / "history.png").exists()
