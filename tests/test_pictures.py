"""TensorBoard pictures of real `digitlab` runs on synthetic data, read back from the event files."""

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import digitlab_here, run_digitlab, synthetic_digits, write_mnist_like
from digitlab.training.callbacks import picture_callbacks
from digitlab.data import MNISTDataModule
from digitlab.models.centroid import NearestCentroid
from digitlab.models.lenet import LeNet5
from tensorboard_events import image_steps, images, scalars
from trainer_utils import quiet_trainer

QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
TEST_IMAGES = 50  # write_mnist_like's default test set: synthetic_digits(50, seed=2)


def fit(tmp_path: Path, data: Path, *args: str, run=digitlab_here) -> Path:
    """`digitlab fit` in this process (`run=run_digitlab`: the console script, in processes of its own)."""
    result = run(
        "fit", "--data.data_dir", str(data), "--data.verify", "false", "--data.batch_size", "32",
        "--trainer.max_epochs", "1", *QUIET, *args, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp_path / "lightning_logs" / "version_0"


def checkpoint(run: Path) -> Path:
    (path,) = (run / "checkpoints").glob("*.ckpt")
    return path


def tile(image, k: int) -> torch.Tensor:
    """Tile k of a `make_grid` row of 28x28 digits with 2-pixel borders, as 0..255 values."""
    pixels = torch.tensor(np.asarray(image.convert("L")), dtype=torch.float)
    return pixels[2:30, 2 + 30 * k : 30 + 30 * k]


def per_class_accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> list[float]:
    with torch.no_grad():
        predicted = model(images.unsqueeze(1).float() / 255).argmax(1)
    return [(predicted[labels == k] == k).float().mean().item() for k in range(10)]


@pytest.fixture(scope="module")
def lenet_run(tmp_path_factory) -> tuple[Path, Path]:
    data = write_mnist_like(tmp_path_factory.mktemp("data"))
    # Seeded: an unlucky seed gets every synthetic test image right, and so draws no `test/mistakes`.
    return fit(tmp_path_factory.mktemp("run"), data, "--model", "lenet5", "--data.val_split", "40",
               "--seed_everything", "0"), data


def test_fit_logs_every_picture_once_as_rgb_chw(lenet_run):
    run, _ = lenet_run
    pictures = images(run)
    # One validation epoch (the sanity check is not drawn), then one test after fitting.
    counts = {tag: len(logged) for tag, logged in pictures.items()}
    assert counts == {"train/examples": 1, "train/class_means": 1, "val/confusion_matrix": 1,
                      "test/confusion_matrix": 1, "test/mistakes": 1}
    for tag, (image,) in pictures.items():
        assert image.mode == "RGB", tag
    # CHW read as CHW: ten 28-pixel tiles side by side with 2-pixel borders, not a transposed strip.
    assert pictures["train/examples"][0].size == pictures["train/class_means"][0].size == (302, 32)
    for tag in ("val/confusion_matrix", "test/confusion_matrix"):
        assert min(pictures[tag][0].size) >= 300, tag
    assert pictures["test/mistakes"][0].width >= 8 * 28


def test_examples_and_class_means_show_the_training_split(lenet_run):
    run, data = lenet_run
    datamodule = MNISTDataModule(data_dir=str(data), val_split=40, verify=False, download=False)
    datamodule.setup("fit")
    train_images, train_labels = datamodule.train_set.images.float(), datamodule.train_set.labels
    pictures = images(run)
    for k in range(10):
        members = train_images[train_labels == k]
        # TensorBoard stores floats in [0, 1] as bytes by truncation: within one grey level.
        assert (tile(pictures["train/examples"][0], k) - members[0]).abs().max() <= 1, k
        assert (tile(pictures["train/class_means"][0], k) - members.mean(0)).abs().max() <= 1, k


def test_per_class_test_accuracy_agrees_with_the_checkpoint(lenet_run):
    run, _ = lenet_run
    logged = scalars(run)
    model = LeNet5.load_from_checkpoint(checkpoint(run), map_location="cpu").eval()
    expected = per_class_accuracy(model, *synthetic_digits(TEST_IMAGES, seed=2))
    for k in range(10):
        assert logged[f"test/acc_class_{k}"] == [pytest.approx(expected[k], abs=1e-6)], k


@pytest.mark.slow  # two DDP processes
def test_under_ddp_rank_0_draws_the_global_pictures(tmp_path):
    # 199 training and 53 test images: two processes get padded batches (label -100), which must not count.
    data = write_mnist_like(tmp_path / "uneven", train=199, test=53)
    run = fit(tmp_path, data, "--model", "centroid", "--data.val_split", "41", "--trainer.accelerator", "cpu",
              "--trainer.devices", "2", "--trainer.strategy", "ddp", run=run_digitlab)
    pictures = images(run)
    assert {tag: len(logged) for tag, logged in pictures.items() if tag != "test/mistakes"} == {
        "train/examples": 1, "train/class_means": 1, "val/confusion_matrix": 1, "test/confusion_matrix": 1}
    assert len(pictures.get("test/mistakes", [])) <= 1
    model = NearestCentroid.load_from_checkpoint(checkpoint(run), map_location="cpu").eval()
    for k in range(10):  # the centroid's own means, drawn from the model
        assert (tile(pictures["train/class_means"][0], k) - model.class_means()[k, 0] * 255).abs().max() <= 1
    expected = per_class_accuracy(model, *synthetic_digits(53, seed=2))
    logged = scalars(run)
    for k in range(10):
        assert logged[f"test/acc_class_{k}"] == [pytest.approx(expected[k], abs=1e-6)], k


@pytest.mark.parametrize("every_seconds, drawn_epochs", [(3600, [0, 2]), (0, [0, 1, 2])])
def test_while_fitting_a_validation_matrix_is_drawn_at_most_so_often_and_the_last_one_always(
        tmp_path, synthetic_mnist, every_seconds, drawn_epochs):
    matrix = f"{{class_path: digitlab.training.callbacks.ConfusionMatrix, init_args: {{every_seconds: {every_seconds}}}}}"
    run = fit(tmp_path, synthetic_mnist, "--model", "centroid", "--data.val_split", "40", "--trainer.max_epochs", "3",
              "--pictures", "false", f"--trainer.callbacks+={matrix}")
    steps_per_epoch = 160 // 32
    assert image_steps(run) == {"val/confusion_matrix": [(epoch + 1) * steps_per_epoch for epoch in drawn_epochs],
                                "test/confusion_matrix": [3 * steps_per_epoch]}


def test_pictures_false_logs_no_picture(tmp_path, synthetic_mnist):
    run = fit(tmp_path, synthetic_mnist, "--model", "centroid", "--data.val_split", "40", "--pictures", "false")
    assert images(run) == {}
    logged = scalars(run)
    assert "test/acc" in logged and not any(tag.startswith("test/acc_class") for tag in logged)


def test_without_a_tensorboard_logger_only_the_accuracies_remain(synthetic_mnist):
    datamodule = MNISTDataModule(data_dir=str(synthetic_mnist), val_split=40, batch_size=32, verify=False,
                                 download=False)
    trainer = quiet_trainer(max_epochs=1, callbacks=picture_callbacks())  # logger=False
    model = LeNet5()
    trainer.fit(model, datamodule=datamodule)
    (metrics,) = trainer.test(model, datamodule=datamodule, verbose=False)
    expected = per_class_accuracy(model.eval(), *synthetic_digits(TEST_IMAGES, seed=2))
    for k in range(10):
        assert metrics[f"test/acc_class_{k}"] == pytest.approx(expected[k], abs=1e-6)
