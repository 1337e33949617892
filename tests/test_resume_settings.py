"""`fit --ckpt_path last|best|FILE` resumes a run only with the model and data settings it was trained with: other
settings are refused in one paragraph naming the keys and the run, never mixed into a run folder."""

import pytest
import yaml

from conftest import SMALL_RUN, assert_user_error, fit_one_mlp_epoch, write_mnist_like

ONE_EPOCH = ["--model", "mlp", "--trainer.max_epochs", "1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_mnist_like(tmp_path_factory.mktemp("data"), train=200, test=50)


@pytest.mark.parametrize("other, keys", [
    (["--data.batch_size", "16", "--model.init_args.lr", "0.5"],
     ["data.batch_size: 32 in the run, 16 here", "model.init_args.lr"]),
    (["--model", "lenet5"], ["model.class_path: 'digitlab.models.mlp"]),
])
def test_other_settings_are_refused_naming_the_keys_and_the_run(tmp_path, data, digitlab_main, other, keys):
    run = fit_one_mlp_epoch(tmp_path, data)
    before = sorted(p.name for p in run.parent.iterdir())
    result = digitlab_main("fit", *ONE_EPOCH, "--data.data_dir", str(data), *SMALL_RUN, *other,
                           "--ckpt_path", "last", cwd=tmp_path)
    assert_user_error(result, "--ckpt_path last would resume the run", str(run), *keys,
                      f"--config {run / 'config.yaml'}")
    assert sorted(p.name for p in run.parent.iterdir()) == before  # no run folder mixing the two


def test_the_same_settings_resume(tmp_path, data, digitlab_main):
    run = fit_one_mlp_epoch(tmp_path, data)
    moved = tmp_path / "moved-data"
    data_copy = __import__("shutil").copytree(data, moved)  # where the files are read from is no setting
    result = digitlab_main("fit", "--model", "mlp", "--trainer.max_epochs", "2", "--data.data_dir", str(data_copy),
                           *SMALL_RUN, "--test_after_fit", "false", "--ckpt_path", "last", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    resumed = yaml.safe_load((run.parent / "version_1" / "config.yaml").read_text())
    assert resumed["data"]["batch_size"] == 32 and (run.parent / "version_1" / "checkpoints" / "last.ckpt").is_file()


def test_the_runs_own_config_resumes(tmp_path, data, digitlab_main):
    run = fit_one_mlp_epoch(tmp_path, data)
    result = digitlab_main("fit", "--config", str(run / "config.yaml"), "--trainer.max_epochs", "2",
                           "--test_after_fit", "false", "--ckpt_path", "last", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
