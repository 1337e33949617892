"""Small inputs that must not exhaust the machine, and odd config files: through the `digitlab` entry point,
each is one paragraph naming the offending thing, exit code 2, no traceback, nothing written."""

import gzip
from pathlib import Path

import pytest

from conftest import assert_user_error

QUIET = ("--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false")


def fit(digitlab_main, tmp_path: Path, *args: str):
    return digitlab_main("fit", "--model", "lenet5", "--data.data_dir", str(tmp_path / "no-mnist"),
                         "--data.download", "false", *QUIET, *args, cwd=tmp_path)


def assert_nothing_written(tmp_path: Path) -> None:
    assert not list(tmp_path.glob("lightning_logs/version_*")), "a run folder was written"


def test_more_data_workers_than_cpus(tmp_path, digitlab_main):
    result = fit(digitlab_main, tmp_path, "--data.num_workers", "100000")
    assert_user_error(result, "data.num_workers=100000", "the CPUs this process may use")
    assert_nothing_written(tmp_path)


def alias_bomb(levels: int) -> str:
    """A "billion laughs": each list holds nine aliases of the previous one; 9**levels strings in all."""
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 9)}]" for n in range(1, levels)]
    return "\n".join(lines) + f"\nmodel: lenet5\ntrainer:\n  max_epochs: *a{levels - 1}\n"


@pytest.mark.parametrize(
    "text, named",
    [
        (alias_bomb(6), "expands to more than 10,000 values once its YAML aliases"),  # 531,441 strings
        ("model: lenet5\ntrainer:\n  callbacks: &loop [*loop]\n", "repeats itself endlessly"),
        (f"model: lenet5\ntrainer:\n  callbacks: {'[' * 500}{']' * 500}\n", "nests more than 100 levels deep"),
    ],
    ids=["alias bomb", "alias in its own anchor", "nested 500 deep"],
)
def test_a_config_that_expands_beyond_a_sane_size_is_refused(tmp_path, digitlab_main, text, named):
    (tmp_path / "config.yaml").write_text(text)
    result = fit(digitlab_main, tmp_path, "--config", "config.yaml")
    assert_user_error(result, "The config file config.yaml", named)
    assert len(result.stderr) < 10_000
    assert_nothing_written(tmp_path)


def test_a_config_may_reuse_a_part_through_an_alias(tmp_path, digitlab_main):
    (tmp_path / "config.yaml").write_text("model: lenet5\ntrainer:\n  max_epochs: &epochs 2\n  min_epochs: *epochs\n")
    result = fit(digitlab_main, tmp_path, "--config", "config.yaml", "--print_config")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "  max_epochs: 2\n" in result.stdout and "  min_epochs: 2\n" in result.stdout


def test_an_error_quotes_only_the_start_of_a_long_value(tmp_path, digitlab_main):
    (tmp_path / "config.yaml").write_text(f"model: lenet5\ntrainer:\n  max_epochs: [{', '.join(['7'] * 3000)}]\n")
    result = fit(digitlab_main, tmp_path, "--config", "config.yaml")
    assert_user_error(result, "trainer.max_epochs", "Given value: [7, 7", "more characters)")
    [message] = [line for line in result.stderr.splitlines() if line.startswith("digitlab: error:")]
    assert len(message) < 2000


@pytest.mark.parametrize("content, flag", [("model: lenet5  # café\n".encode("latin-1"), "--config"),
                                           (gzip.compress(b"model: lenet5\n"), "--config=")], ids=["latin-1", "gzip"])
def test_a_config_file_that_is_not_text_is_named(tmp_path, digitlab_main, content, flag):
    (tmp_path / "config.yaml").write_bytes(content)
    args = [flag + "config.yaml"] if flag.endswith("=") else [flag, "config.yaml"]
    result = fit(digitlab_main, tmp_path, *args)
    assert_user_error(result, "The config file config.yaml is not UTF-8 text (byte 0x")
    assert_nothing_written(tmp_path)


@pytest.mark.parametrize("seed", ["-1", str(10**23)])
def test_a_data_seed_out_of_range(tmp_path, digitlab_main, seed):
    assert_user_error(fit(digitlab_main, tmp_path, "--data.seed", seed), f"data.seed={seed} is not valid")
    assert_nothing_written(tmp_path)
