"""The data module's random affine distortion (`digitlab/data/augmentation.py`): whole batches, seeded by
(seed, epoch, batch, rank) alone, off by default, training batches only, and a mid-epoch resume that
distorts exactly as the uninterrupted run."""

import pytest
import torch

from conftest import SMALL_RUN, digitlab_here, synthetic_digits, write_mnist_like
from digitlab.data import MNISTDataModule
from digitlab.data.augmentation import RandomAffine
from digitlab.data.mnist import to_model_input
from tensorboard_events import images
from trainer_utils import quiet_trainer

ON = RandomAffine(rotation=15, scale=0.1, translation=0.1, seed=3)


def digits(count: int = 8) -> torch.Tensor:
    return to_model_input(synthetic_digits(count)[0])


def test_shapes_dtype_and_range_are_kept():
    batch = digits(8)
    out = ON(batch, ON.generator(0, 0))
    assert out.shape == batch.shape and out.dtype == batch.dtype and out.device == batch.device
    assert 0 <= out.min() and out.max() <= 1
    assert not torch.equal(out, batch)
    assert ON(batch[:0], ON.generator(0, 0)).shape == (0, 1, 28, 28)


def test_the_same_seed_epoch_batch_and_rank_give_the_same_distortion():
    batch = digits(8)
    first = ON(batch, ON.generator(2, 5, rank=1))
    assert torch.equal(first, ON(batch, ON.generator(2, 5, rank=1)))
    for other in (ON.generator(2, 6, rank=1), ON.generator(3, 5, rank=1), ON.generator(2, 5, rank=0),
                  RandomAffine(15, 0.1, 0.1, seed=4).generator(2, 5, rank=1)):
        assert not torch.equal(first, ON(batch, other))


def test_each_image_gets_its_own_distortion_within_the_ranges():
    theta = ON.matrices(500, ON.generator(0, 0))
    assert theta.shape == (500, 2, 3)
    linear = theta[:, :, :2]
    size = 1 / linear.det().sqrt()  # affine_grid maps output to input: the inverse of the resize
    assert size.min() >= 0.9 - 1e-6 and size.max() <= 1.1 + 1e-6 and size.std() > 0.02
    angle = torch.rad2deg(torch.atan2(linear[:, 1, 0], linear[:, 0, 0]))
    assert angle.abs().max() <= 15 + 1e-4 and angle.std() > 3
    assert theta[:, :, 2].abs().max() <= 0.2 + 1e-6  # 10 % of the side: 0.2 in affine_grid's [-1, 1]


def test_zero_ranges_are_the_identity():
    off = RandomAffine()
    batch = digits(4)
    assert not off.active
    assert off(batch, off.generator(0, 0)) is batch
    identity = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    assert torch.allclose(off.matrices(3, off.generator(0, 0)), identity.expand(3, 2, 3))


def test_translation_alone_moves_a_dot_by_whole_pixels_at_most_the_range():
    dot = torch.zeros(1, 1, 28, 28)
    dot[0, 0, 14, 14] = 1
    shift = RandomAffine(translation=2 / 28, seed=1)
    moved = shift(dot.expand(64, 1, 28, 28).contiguous(), shift.generator(0, 0))
    rows, cols = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    centre_rows = (moved[:, 0] * rows).sum((1, 2)) / moved[:, 0].sum((1, 2))
    centre_cols = (moved[:, 0] * cols).sum((1, 2)) / moved[:, 0].sum((1, 2))
    assert (centre_rows - 14).abs().max() <= 2 + 1e-4 and (centre_cols - 14).abs().max() <= 2 + 1e-4


def test_off_by_default_and_recorded_in_the_hyperparameters():
    data = MNISTDataModule()
    assert not data.augmentation.active
    on = MNISTDataModule(augment_rotation=10, augment_scale=0.1, augment_translation=0.05, seed=9)
    assert on.augmentation == RandomAffine(10, 0.1, 0.05, seed=9)
    assert {key: on.hparams[key] for key in ("augment_rotation", "augment_scale", "augment_translation")} == \
        {"augment_rotation": 10, "augment_scale": 0.1, "augment_translation": 0.05}


@pytest.mark.parametrize("option, value", [("augment_rotation", -1.0), ("augment_rotation", 181.0),
                                           ("augment_scale", 0.95), ("augment_translation", float("nan"))])
def test_values_that_cannot_work_are_refused(option, value):
    from digitlab.errors import UserError

    with pytest.raises(UserError, match=f"data.{option}="):
        MNISTDataModule(**{option: value})


def test_only_training_batches_are_distorted(tmp_path):
    data_dir = write_mnist_like(tmp_path / "data", train=96, test=32)
    data = MNISTDataModule(str(data_dir), val_split=32, batch_size=32, eval_batch_size=32, verify=False,
                           download=False, augment_rotation=20, augment_translation=0.1)
    from digitlab.models.lenet import LeNet5

    seen: dict[str, list[torch.Tensor]] = {"train": [], "val": []}

    class Spy(LeNet5):
        def training_step(self, batch, batch_idx):
            seen["train"].append(batch[0])
            return super().training_step(batch, batch_idx)

        def validation_step(self, batch, batch_idx):
            seen["val"].append(batch[0])
            return super().validation_step(batch, batch_idx)

    quiet_trainer(max_epochs=1, num_sanity_val_steps=0).fit(Spy(), datamodule=data)
    plain = {"val": to_model_input(data.val_set.images)}
    assert torch.equal(torch.cat(seen["val"]), plain["val"])
    order = data.train_dataloader().sampler.sampler
    order.set_epoch(0)
    first = to_model_input(data.train_set.images[order.permutation()[:32]])
    assert not torch.equal(seen["train"][0], first)
    assert torch.equal(seen["train"][0], data.augmentation(first, data.augmentation.generator(0, 0)))


PLAIN = ["--model", "lenet5", "--seed_everything", "5", "--trainer.max_epochs", "2", "--trainer.deterministic",
         "true", "--pictures", "false", "--test_after_fit", "false"]
RESUME = [*PLAIN, "--data.augment_rotation", "12", "--data.augment_scale", "0.1", "--data.augment_translation", "0.1"]


@pytest.mark.slow  # three short fits of LeNet-5
def test_a_mid_epoch_resume_distorts_as_the_uninterrupted_run(tmp_path):
    data = write_mnist_like(tmp_path / "data", train=200, test=20)
    every_step = ("--trainer.callbacks+={class_path: lightning.pytorch.callbacks.ModelCheckpoint, init_args: "
                  "{every_n_train_steps: 2, save_top_k: -1, save_last: true, filename: '{step}'}}")
    whole = digitlab_here("fit", *RESUME, *SMALL_RUN, "--data.data_dir", str(data), every_step, cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr[-3000:]
    run = tmp_path / "lightning_logs" / "version_0" / "checkpoints"
    middle = run / "step=2.ckpt"  # 5 batches an epoch: two in
    resumed = digitlab_here("fit", *RESUME, *SMALL_RUN, "--data.data_dir", str(data), every_step, "--ckpt_path",
                            str(middle), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected = torch.load(run / "last.ckpt", weights_only=True)["state_dict"]
    got = torch.load(tmp_path / "lightning_logs" / "version_1" / "checkpoints" / "last.ckpt",
                     weights_only=True)["state_dict"]
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    plain = digitlab_here("fit", *PLAIN, *SMALL_RUN, "--data.data_dir", str(data), cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr[-3000:]
    other = torch.load(tmp_path / "lightning_logs" / "version_2" / "checkpoints" / "last.ckpt",
                       weights_only=True)["state_dict"]
    assert not all(torch.equal(other[k], expected[k]) for k in expected)  # the distortion did change training


def test_the_picture_shows_a_batch_before_and_after(tmp_path):
    data = write_mnist_like(tmp_path / "data")
    result = digitlab_here("fit", "--model", "lenet5", "--trainer.max_steps", "1", "--data.augment_rotation", "30",
                           "--data.data_dir", str(data), *SMALL_RUN, "--test_after_fit", "false", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (picture,) = images(tmp_path / "lightning_logs" / "version_0")["train/augmentation"]
    assert picture.size == (16 * 30 + 2, 2 * 32)


def test_no_picture_without_augmentation(tmp_path):
    data = write_mnist_like(tmp_path / "data")
    result = digitlab_here("fit", "--model", "lenet5", "--trainer.max_steps", "1", "--data.data_dir", str(data),
                           *SMALL_RUN, "--test_after_fit", "false", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "train/augmentation" not in images(tmp_path / "lightning_logs" / "version_0")
