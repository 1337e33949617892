"""End to end on the real MNIST files: the README's main job, as a user runs it.

The seed's own recipe (`configs/lenet5.yaml`, 9 epochs to its early stop with its seed) reproduces the seed's
0.9858 within its run-to-run spread (0.9852, 0.9853, 0.9883 and 0.9860 with seeds 42, 1, 2 and 4); it is run
by `benchmarks/time_to_accuracy.py --recipes lenet5` rather than here, where it would be a tenth of CI's time.
The fast recipe, which beats the seed, carries the checks of what a run logs."""

import pytest

from conftest import MNIST_DIR, REPO, requires_mnist, run_digitlab
from tensorboard_events import scalars

pytestmark = [requires_mnist, pytest.mark.e2e]

SEED_ACCURACY = 0.9858  # the seed tutorial's LeNet-5 on the official test set


def test_lenet5_fast_recipe_beats_the_seed_in_two_epochs_and_logs_every_metric(tmp_path):
    result = run_digitlab(
        "fit", "--config", str(REPO / "configs/lenet5_fast.yaml"), "--data.data_dir", str(MNIST_DIR),
        "--trainer.enable_progress_bar", "false", cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    printed = float(result.stdout.split("Test accuracy:")[1].split()[0])
    assert printed >= SEED_ACCURACY

    run = tmp_path / "lightning_logs" / "version_0"
    logged = scalars(run)
    for tag in ("train/loss_step", "train/loss_epoch", "train/acc", "val/loss", "val/acc", "val/acc_best",
                "test/loss", "test/acc"):
        assert logged.get(tag), f"{tag} missing from {sorted(logged)}"
    assert logged["test/acc"][-1] == pytest.approx(printed, abs=5e-5)
    assert logged["val/acc_best"][-1] == pytest.approx(max(logged["val/acc"]))
    assert 0.97 < logged["train/acc"][-1] < 1 and 0 < logged["train/loss_epoch"][-1] < 0.1  # the last epoch's
    assert logged["hp_metric"][-1] == pytest.approx(printed, abs=5e-5)  # the real metric, not -1
    assert (run / "config.yaml").is_file()
    assert (run / "checkpoints" / "last.ckpt").is_file()
