"""The nearest-class-mean model on synthetic data: exact means, nearest-mean predictions, checkpoints."""

import pytest
import torch

from digitlab.data import MNISTDataModule
from digitlab.models.centroid import NearestCentroid
from trainer_utils import quiet_trainer


def fitted(folder, **data_kwargs):
    data = MNISTDataModule(str(folder), download=False, verify=False, val_split=0, batch_size=64, **data_kwargs)
    model = NearestCentroid()
    quiet_trainer(max_epochs=1).fit(model, datamodule=data)
    return model, data


def test_means_are_the_per_class_mean_images(synthetic_mnist):
    model, data = fitted(synthetic_mnist)
    images = data.train_set.images.float() / 255
    labels = data.train_set.labels
    for k in range(10):
        expected = images[labels == k].double().mean(0)
        assert torch.allclose(model.means[k].reshape(28, 28), expected, atol=1e-12)
        assert model.counts[k] == (labels == k).sum()


def test_more_epochs_give_the_same_means(synthetic_mnist):
    once, data = fitted(synthetic_mnist)
    model = NearestCentroid()
    quiet_trainer(max_epochs=3).fit(model, datamodule=data)
    assert torch.equal(model.means, once.means)


def test_predicts_the_nearest_mean_by_mean_squared_error(synthetic_mnist):
    model, data = fitted(synthetic_mnist)
    x = torch.rand(20, 1, 28, 28)
    mse = ((x.flatten(1).double()[:, None, :] - model.means[None]) ** 2).mean(2)
    logits = model(x)
    assert torch.equal(logits.argmax(1), mse.argmin(1))
    assert torch.allclose(logits.double(), -mse / 0.01, atol=1e-4)


def test_means_survive_a_checkpoint(synthetic_mnist, tmp_path):
    model, data = fitted(synthetic_mnist)
    trainer = quiet_trainer(max_epochs=1)
    trainer.strategy.connect(model)
    path = tmp_path / "centroid.ckpt"
    trainer.save_checkpoint(path)
    restored = NearestCentroid.load_from_checkpoint(path)
    assert torch.equal(restored.means, model.means) and torch.equal(restored.counts, model.counts)


def test_fitting_updates_no_parameter(synthetic_mnist):
    model, _ = fitted(synthetic_mnist)
    assert model.temperature.item() == pytest.approx(0.01) and model.temperature.grad is None
