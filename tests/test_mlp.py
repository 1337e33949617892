"""The scratch MLP: hand-made parameters, and a manual-optimization step that does exactly the written rule."""

import copy

import pytest
import torch
import torch.nn.functional as F

from digitlab.data import MNISTDataModule
from digitlab.models.mlp import GradientDescent, ScratchMLP
from trainer_utils import quiet_trainer


def test_shape_and_parameters_are_made_by_hand():
    model = ScratchMLP()
    assert model(torch.rand(3, 1, 28, 28)).shape == (3, 10)
    assert not any(isinstance(m, torch.nn.Linear) for m in model.modules())
    assert sum(p.numel() for p in model.parameters()) == 784 * 64 + 64 + 64 * 64 + 64 + 64 * 10 + 10


def test_seed_initialisation_is_randn_times_std():
    torch.manual_seed(0)
    model = ScratchMLP(init_std=0.2)
    torch.manual_seed(0)
    assert torch.equal(model.weights[0], torch.randn(784, 64) * 0.2)


def test_loss_is_stable_where_log_of_softmax_is_not():
    logits = torch.tensor([[1000.0, 0.0, -1000.0]])
    model = ScratchMLP(reduction="sum")
    assert torch.isinf(-torch.log(torch.softmax(logits, 1))[0, 2])  # the seed's formulation
    assert torch.isfinite(model.loss(logits, torch.tensor([2])))


@pytest.mark.parametrize("momentum, weight_decay", [(0.0, 0.0), (0.9, 0.01)])
def test_update_rule_matches_torch_sgd(momentum, weight_decay):
    torch.manual_seed(0)
    ours = [torch.randn(5, 3, requires_grad=True)]
    theirs = [ours[0].detach().clone().requires_grad_()]
    mine = GradientDescent(ours, lr=0.1, momentum=momentum, weight_decay=weight_decay)
    reference = torch.optim.SGD(theirs, lr=0.1, momentum=momentum, weight_decay=weight_decay)
    for step in range(3):
        target = torch.randn(5, 3)
        for weights, optimizer in ((ours, mine), (theirs, reference)):
            optimizer.zero_grad()
            ((weights[0] - target) ** 2).sum().backward()
            optimizer.step()
        assert torch.allclose(ours[0], theirs[0], atol=1e-6)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_a_training_step_changes_the_weights_exactly_as_written(synthetic_mnist, reduction):
    # One full batch: the gradient does not depend on the sampler's order.
    data = MNISTDataModule(str(synthetic_mnist), download=False, verify=False, val_split=0, batch_size=200)
    torch.manual_seed(0)
    model = ScratchMLP(init_std=0.2, lr=1e-3, momentum=0.5, weight_decay=0.1, reduction=reduction)
    before = copy.deepcopy(model)

    quiet_trainer(max_steps=2).fit(model, datamodule=data)

    data.setup("fit")
    images, labels = data.on_after_batch_transfer((data.train_set.images, data.train_set.labels), 0)
    velocity = [torch.zeros_like(p) for p in before.parameters()]
    for _ in range(2):
        before.zero_grad()
        loss = F.cross_entropy(before(images), labels, reduction=reduction)
        loss.backward()
        with torch.no_grad():
            for p, v in zip(before.parameters(), velocity):
                v.mul_(0.5).add_(p.grad + 0.1 * p)
                p -= 1e-3 * v
    for after, expected in zip(model.parameters(), before.parameters()):
        assert torch.allclose(after, expected, rtol=1e-4, atol=1e-6)


def test_gradient_clipping_bounds_the_step(synthetic_mnist):
    data = MNISTDataModule(str(synthetic_mnist), download=False, verify=False, val_split=0, batch_size=200)
    torch.manual_seed(0)
    model = ScratchMLP(init_std=0.2, lr=1.0, momentum=0.0, reduction="sum", gradient_clip_val=0.5)
    before = [p.detach().clone() for p in model.parameters()]
    quiet_trainer(max_steps=1).fit(model, datamodule=data)
    step = torch.cat([(b - p.detach()).flatten() for b, p in zip(before, model.parameters())])
    assert step.norm() == pytest.approx(0.5, rel=1e-3)  # lr 1 x a gradient clipped to norm 0.5


def test_the_schedule_advances_once_per_step_over_the_whole_run(synthetic_mnist):
    data = MNISTDataModule(str(synthetic_mnist), download=False, verify=False, val_split=0, batch_size=50)
    model = ScratchMLP(lr=0.1, lr_schedule="onecycle")
    trainer = quiet_trainer(max_epochs=2)
    trainer.fit(model, datamodule=data)
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    assert trainer.global_step == 8 == scheduler.total_steps == scheduler.last_epoch
