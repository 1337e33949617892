"""Small inputs that must not exhaust the machine, and odd config files: through the `digitlab` entry point,
each is one paragraph naming the offending thing, exit code 2, no traceback, nothing written."""

from pathlib import Path

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
