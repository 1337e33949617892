"""Unit tests of the plugin's model. Install the package first: pip install ./examples/plugin, then pytest."""

from functools import partial

import pytest
import torch

from digitlab.errors import UserError
from digitlab.models.registry import get_model_entry
from digitlab_tinycnn import TinyCNN


def test_a_batch_of_images_gives_one_logit_per_class():
    images = torch.rand(4, 1, 28, 28)
    assert TinyCNN()(images).shape == (4, 10)
    assert TinyCNN(channels=3, num_classes=5)(images).shape == (4, 5)


def test_hyperparameters_are_saved_for_checkpoints():
    assert TinyCNN(channels=4).hparams["channels"] == 4


def test_bad_values_are_user_errors():
    with pytest.raises(UserError, match="channels"):
        TinyCNN(channels=0)
    with pytest.raises(UserError, match="dropout"):
        TinyCNN(dropout=1.0)


def test_a_few_optimizer_steps_fit_one_batch():
    torch.manual_seed(0)
    model = TinyCNN(dropout=0.0, optimizer=partial(torch.optim.Adam, lr=0.01))
    images, targets = torch.rand(20, 1, 28, 28), torch.arange(20) % 10
    optimizer = model.configure_optimizers()
    first = model.loss(model(images), targets).item()
    for _ in range(30):
        optimizer.zero_grad()
        model.loss(model(images), targets).backward()
        optimizer.step()
    assert model.loss(model(images), targets).item() < 0.1 * first


def test_the_registry_finds_it_by_its_entry_point_name(monkeypatch):
    monkeypatch.delenv("DIGITLAB_DISABLE_PLUGINS", raising=False)
    entry = get_model_entry("tinycnn")
    assert entry.cls is TinyCNN
    assert entry.source == "digitlab-tinycnn"
    assert entry.description.startswith("Small CNN")
