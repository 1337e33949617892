"""The batch-norm CNN (`digitlab/models/bncnn.py`): shapes, size, its one-cycle schedule stepped every batch,
batch norm in eval mode for inference, and a short real run (slow)."""

import pytest
import torch
import torch.nn.functional as F

from conftest import MNIST_DIR, REPO, SMALL_RUN, digitlab_here, requires_mnist, run_digitlab, write_mnist_like
from digitlab.errors import UserError
from digitlab.models.bncnn import BatchNormCNN
from digitlab.models.registry import get_model_class, model_entries
from trainer_utils import quiet_trainer


def test_registered_under_its_config_name_with_its_parameter_count_in_the_listing():
    assert get_model_class("bncnn") is BatchNormCNN
    (entry,) = [e for e in model_entries() if e.name == "bncnn"]
    count = sum(p.numel() for p in BatchNormCNN().parameters())
    assert count == 38_306
    assert f"({count:,} parameters)" in entry.description
    assert (REPO / "configs" / "bncnn.yaml").is_file() and (REPO / "configs" / "sweeps" / "bncnn.yaml").is_file()


@pytest.mark.parametrize("batch", [1, 5])
def test_forward_maps_images_to_ten_logits(batch):
    model = BatchNormCNN().eval()
    assert model(torch.rand(batch, 1, 28, 28)).shape == (batch, 10)


def test_width_scales_the_channels():
    model = BatchNormCNN(width=2)
    convolutions = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convolutions] == [6, 10, 16]
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("kwargs, fragment", [({"width": 0}, "model.width=0"),
                                              ({"label_smoothing": 1.0}, "model.label_smoothing=1.0"),
                                              ({"warmup": 0.0}, "model.warmup=0.0")])
def test_values_that_cannot_work_are_refused(kwargs, fragment):
    with pytest.raises(UserError, match=fragment):
        BatchNormCNN(**kwargs)


def test_the_training_loss_smooths_labels_and_ignores_ddp_padding():
    model = BatchNormCNN(label_smoothing=0.1)
    logits, targets = torch.randn(6, 10), torch.tensor([1, 2, 3, -100, 5, -100])
    expected = F.cross_entropy(logits[targets >= 0], targets[targets >= 0], label_smoothing=0.1)
    assert torch.allclose(model.loss(logits, targets), expected)


def test_eval_mode_gives_each_image_the_same_logits_whatever_its_batch():
    model = BatchNormCNN()
    model.train()
    model(torch.rand(64, 1, 28, 28))  # moves the running statistics away from their start
    model.eval()
    images = torch.rand(8, 1, 28, 28)
    together = model(images)
    alone = torch.cat([model(image[None]) for image in images])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)


def test_one_cycle_runs_over_every_training_step(tmp_path):
    data = write_mnist_like(tmp_path / "data", train=200, test=20)
    from digitlab.data import MNISTDataModule

    module = MNISTDataModule(str(data), val_split=40, batch_size=32, verify=False, download=False)
    model = BatchNormCNN(optimizer=lambda params: torch.optim.Adam(params, lr=0.02))
    trainer = quiet_trainer(max_epochs=2, num_sanity_val_steps=0)
    trainer.fit(model, datamodule=module)
    (config,) = trainer.lr_scheduler_configs
    assert config.interval == "step"
    schedule = config.scheduler
    assert schedule.total_steps == 2 * 5  # 160 training images in batches of 32, two epochs
    assert schedule.last_epoch == schedule.total_steps  # stepped after each of them
    assert [group["max_lr"] for group in schedule.optimizer.param_groups] == [0.02]  # the optimizer's lr: the peak


def test_a_run_without_an_end_is_refused_in_one_paragraph(tmp_path, digitlab_main):
    data = write_mnist_like(tmp_path / "data")
    result = digitlab_main("fit", "--model", "bncnn", "--trainer.max_epochs", "-1", "--data.data_dir", str(data),
                           *SMALL_RUN, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "needs the run's length" in result.stderr


def test_a_scheduler_of_ones_own_replaces_the_one_cycle(tmp_path):
    data = write_mnist_like(tmp_path / "data")
    result = digitlab_here("fit", "--model", "bncnn", "--trainer.max_epochs", "1", "--data.data_dir", str(data),
                           "--model.init_args.lr_scheduler", "torch.optim.lr_scheduler.StepLR",
                           "--model.init_args.lr_scheduler.init_args.step_size", "1", *SMALL_RUN, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]


@requires_mnist
@pytest.mark.e2e
def test_a_sixth_of_an_epoch_on_mnist_reaches_0_975(tmp_path):
    """The shipped config cut to its first 79 batches (10,112 images), its one-cycle schedule fitted to them."""
    result = run_digitlab("fit", "--config", str(REPO / "configs/bncnn.yaml"), "--data.data_dir", str(MNIST_DIR),
                          "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "79",
                          "--trainer.enable_progress_bar", "false", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert float(result.stdout.split("Test accuracy:")[1].split()[0]) >= 0.975


def test_the_sweep_file_searches_keys_of_its_config():
    from digitlab.sweep.run_config import load_run_config
    from digitlab.sweep.sweep_file import load_sweep_file

    sweep = load_sweep_file(REPO / "configs/sweeps/bncnn.yaml")
    run_config = load_run_config(["--config", str(REPO / "configs/bncnn.yaml")], sweep)
    assert set(sweep.space) <= set(run_config.config.keys())


def test_a_learning_rate_that_cannot_work_is_refused_before_the_run():
    with pytest.raises(UserError, match="learning rate -0.1"):
        BatchNormCNN(optimizer=_negative_rate)


def _negative_rate(params):  # torch's SGD refuses lr=-0.1 itself: set it afterwards
    optimizer = torch.optim.SGD(params, lr=0.1)
    optimizer.param_groups[0]["lr"] = -0.1
    return optimizer
