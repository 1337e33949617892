"""Values a parser reads without complaint but that cannot work — a sweep range beyond what the run config
accepts, sampler and pruner settings Optuna refuses only once it samples, non-finite bounds, a key set twice
in a sweep file or a config — are refused before anything is written: exit code 2, one paragraph, no
traceback, no sweep folder, study or run folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import REPO, assert_user_error
from sweep_helpers import fit_args, write_sweep_file

SEEDS = "is not valid: expected an integer from 0 to 9,223,372,036,854,775,807"
SPACE = "space:\n  model.init_args.lr: {type: float, low: 1.0e-3, high: 0.1}\n"


def space(key: str, **distribution) -> dict:
    return {"space": {key: distribution}}


@pytest.mark.parametrize("settings, fragments", [
    (space("data.seed", type="int", low=0, high=10**21), ["data.seed can be 1000000000000000000000", SEEDS]),
    (space("data.seed", type="int", low=-5, high=5), ["data.seed can be -5", SEEDS]),
    (space("data.seed", type="float", low=0.0, high=1.0e21), ["data.seed can be", "Expected a <class 'int'>"]),
    (space("trainer.accumulate_grad_batches", type="int", low=0, high=4), ["accumulate_grad_batches=0"]),
    (space("model.init_args.lr", type="float", low=float("nan"), high=0.1), ["low must be a finite number"]),
    (space("model.init_args.lr", type="float", low=0.1, high=float("inf")), ["high must be a finite number"]),
    (space("model.init_args.lr", type="categorical", choices=[0.1, float("nan")]),
     ["model.init_args.lr can be nan", "NaN and infinities are refused"]),
    (space("model.init_args.lr", type="categorical", choices=[0.1, float("-inf")]), ["model.init_args.lr can be -inf"]),
    ({"sampler": {"type": "tpe", "n_startup_trials": 0, "gamma": 5}}, ["the sampler's gamma takes a Python function"]),
    ({"sampler": {"type": "tpe", "weights": 1}}, ["the sampler's weights takes a Python function"]),
    ({"sampler": {"type": "tpe", "n_startup_trials": 0, "n_ei_candidates": 0}}, ["not accepted by Optuna"]),
    ({"pruner": {"type": "hyperband", "reduction_factor": 1}}, ["not accepted by Optuna"]),
    ({"pruner": {"type": "median", "n_warmup_steps": -1}}, ["not accepted by Optuna"]),
], ids=["seed-1e21", "seed-negative", "seed-float", "accumulate-0", "nan-low", "inf-high", "nan-choice",
        "inf-choice", "gamma", "weights", "no-candidates", "hyperband-factor-1", "negative-warmup"])
def test_sweep_values_that_cannot_work(settings, fragments, tmp_path, digitlab_main):
    sweep_file = write_sweep_file(tmp_path / "sweep.yaml", **settings)
    assert_refused_before_anything_is_written(sweep_file, fragments, tmp_path, digitlab_main)


@pytest.mark.parametrize("text, key", [
    (SPACE + "trials: 3\ntrials: 30\n", "trials"),
    (SPACE + "sampler: {type: random, seed: 1, seed: 2}\n", "seed"),
    ("space:\n  model.init_args.lr: {type: float, low: 1.0e-3, low: 0.01, high: 0.1}\n", "low"),
    (SPACE + "  model.init_args.lr: {type: categorical, choices: [0.1]}\n", "model.init_args.lr"),
], ids=["top-level", "sampler", "distribution", "space"])
def test_a_key_twice_in_a_sweep_file(text, key, tmp_path, digitlab_main):
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(text)
    assert_refused_before_anything_is_written(sweep_file, [f"sets the key '{key}' twice"], tmp_path, digitlab_main)


@pytest.mark.parametrize("text, key", [
    ("trainer:\n  max_epochs: 1\n  max_epochs: 5\n", "max_epochs"),
    ("model: lenet5\nmodel: mlp\n", "model"),
    ("data:\n  batch_size: 8\n  seed: 1\n  seed: 2\n", "seed"),
], ids=["trainer", "top-level", "data"])
def test_a_key_twice_in_a_config(text, key, tmp_path, digitlab_main):
    config = tmp_path / "config.yaml"
    config.write_text(text)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    result = digitlab_main("fit", "--model", "lenet5", "--config", str(config), "--data.data_dir",
                           str(tmp_path / "nowhere"), "--data.download", "false", cwd=cwd)
    assert_user_error(result, str(config), f"sets the key '{key}' twice")
    assert result.stderr.count("\n") == 1, result.stderr
    assert list(cwd.iterdir()) == []


def test_a_sweep_file_without_repeats_still_loads():
    from digitlab.sweep.sweep_file import load_sweep_file

    sweep = load_sweep_file(REPO / "configs/sweeps/lenet5.yaml")
    assert sweep.sampler == "tpe" and sweep.sampler_args["n_startup_trials"] == 5


def assert_refused_before_anything_is_written(sweep_file: Path, fragments: list[str], tmp_path: Path,
                                              digitlab_main) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    result = digitlab_main("sweep", "--sweep", str(sweep_file), *fit_args(tmp_path / "nowhere"), cwd=cwd)
    assert_user_error(result, *fragments)
    [message] = [line for line in result.stderr.splitlines() if line.startswith("digitlab: error:")]
    assert result.stderr.strip().splitlines()[-1] == message  # one paragraph, ending the output
    assert list(cwd.iterdir()) == []  # no sweep folder, study.db, sweep.yaml or trial_0
