"""`digitlab lr_find`: Lightning's learning-rate range test through the run path, its plot in a run folder of
its own, and one paragraph for the models it cannot drive."""

import pytest

from conftest import REPO, SMALL_RUN, assert_user_error, write_mnist_like
from digitlab.training.lr_find import option_for_lr
from tensorboard_events import images


@pytest.mark.parametrize("model, named", [("centroid", "centroid"), ("mlp", "mlp")])
def test_manual_optimization_models_are_refused_in_one_paragraph(model, named, tmp_path, digitlab_main):
    data = write_mnist_like(tmp_path / "data")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    result = digitlab_main("lr_find", "--model", model, "--data.data_dir", str(data), *SMALL_RUN, cwd=cwd)
    assert_user_error(result, f"cannot tune the model '{named}'", "manual optimization")
    assert result.stderr.strip().splitlines()[-1].startswith("digitlab: error:")
    assert list(cwd.iterdir()) == []  # the claimed run folder is gone again


def test_a_range_that_rises_nowhere_is_refused(tmp_path, digitlab_main):
    result = digitlab_main("lr_find", "--min_lr", "0.1", "--max_lr", "0.01", "--model", "lenet5", cwd=tmp_path)
    assert_user_error(result, "--min_lr 0.1 is not below --max_lr 0.01")
    assert list(tmp_path.iterdir()) == []


def test_the_printed_option_is_the_one_that_sets_the_configs_learning_rate():
    assert option_for_lr({"class_path": "x", "init_args": {"optimizer": {}}}) == \
        "--model.init_args.optimizer.init_args.lr"
    assert option_for_lr({"class_path": "x", "init_args": {"lr": 0.1}}) == "--model.init_args.lr"


@pytest.mark.slow  # 40 training steps of LeNet-5 and of the batch-norm CNN
@pytest.mark.parametrize("config", ["lenet5.yaml", "bncnn.yaml"])
def test_suggests_a_learning_rate_and_writes_the_plot(config, tmp_path, digitlab_main):
    data = write_mnist_like(tmp_path / "data", train=400)
    args = ["--config", str(REPO / "configs" / config), "--data.data_dir", str(data), *SMALL_RUN]
    result = digitlab_main("lr_find", "--num_training", "40", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    suggested = float(result.stdout.split("Suggested learning rate:")[1].split()[0])
    assert 1e-6 < suggested < 1
    assert f"--model.init_args.optimizer.init_args.lr {suggested:.3g}" in result.stdout
    run = tmp_path / "lightning_logs" / "lr_find" / "version_0"
    assert (run / "lr_find.png").stat().st_size > 1000 and (run / "config.yaml").is_file()
    (picture,) = images(run)["lr_find/loss_vs_lr"]
    assert picture.size[0] > 300
    assert not list(tmp_path.glob(".lr_find_*.ckpt"))  # Lightning's temporary checkpoint is removed
