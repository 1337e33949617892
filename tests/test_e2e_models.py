"""End to end on the real MNIST files: the centroid baseline and the scratch MLP, as a user runs them."""

import pytest

from conftest import MNIST_DIR, REPO, requires_mnist, run_digitlab

pytestmark = [requires_mnist, pytest.mark.e2e]
QUIET = ("--trainer.enable_progress_bar", "false")


def printed_accuracy(stdout: str) -> float:
    return float(stdout.split("Test accuracy:")[1].split()[0])


def test_centroid_scores_exactly_the_seeds_0_8203_and_its_checkpoint_reloads(tmp_path):
    config = str(REPO / "configs/centroid.yaml")
    fit = run_digitlab("fit", "--config", config, "--data.data_dir", str(MNIST_DIR), *QUIET, cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr[-3000:]
    assert "Test accuracy: 0.8203 on 10000 images" in fit.stdout

    [checkpoint] = (tmp_path / "lightning_logs" / "version_0" / "checkpoints").glob("*.ckpt")
    test = run_digitlab(
        "test", "--config", config, "--data.data_dir", str(MNIST_DIR), "--ckpt_path", str(checkpoint), *QUIET,
        cwd=tmp_path,
    )
    assert test.returncode == 0, test.stderr[-3000:]
    assert "Test accuracy: 0.8203 on 10000 images" in test.stdout


def test_mlp_fast_recipe_reaches_0_975(tmp_path):
    result = run_digitlab(
        "fit", "--config", str(REPO / "configs/mlp.yaml"), "--data.data_dir", str(MNIST_DIR), *QUIET, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert printed_accuracy(result.stdout) >= 0.975
