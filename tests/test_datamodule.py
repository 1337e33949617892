"""MNISTDataModule on synthetic IDX files: splits, idempotent setup, batches, value checks."""

from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch import Callback, Trainer

from conftest import write_mnist_like
from digitlab.data import MNISTDataModule
from digitlab.data.mnist import InMemoryDigits, usable_cpus
from digitlab.errors import UserError
from digitlab.models.mlp import ScratchMLP


def make(folder, **kwargs):
    return MNISTDataModule(str(folder), download=False, verify=False, **kwargs)


@pytest.mark.parametrize("val_split, expected_val", [(30, 30), (0.25, 50), (0, 0)])
def test_validation_split_count_or_fraction(synthetic_mnist, val_split, expected_val):
    data = make(synthetic_mnist, val_split=val_split)
    data.setup("fit")
    assert len(data.train_set) == 200 - expected_val
    assert (len(data.val_set) if data.val_set else 0) == expected_val


def test_no_validation_means_no_val_dataloader(synthetic_mnist):
    data = make(synthetic_mnist, val_split=0)
    data.setup("fit")
    assert data.val_dataloader() == []


def test_same_seed_same_split_and_other_seed_other_split(synthetic_mnist):
    splits = []
    for seed in (1, 1, 2):
        data = make(synthetic_mnist, val_split=40, seed=seed)
        data.setup("fit")
        splits.append(data.val_set.images)
    assert torch.equal(splits[0], splits[1])
    assert not torch.equal(splits[0], splits[2])


def test_train_and_validation_partition_the_training_file(synthetic_mnist):
    data = make(synthetic_mnist, val_split=40)
    data.setup("fit")
    together = torch.cat([data.train_set.images, data.val_set.images]).flatten(1)
    assert len(together) == 200
    assert len({tuple(row.tolist()) for row in together}) == 200  # no image in both parts


def test_setup_is_idempotent(synthetic_mnist):
    data = make(synthetic_mnist, val_split=40)
    data.setup("fit")
    train, val = data.train_set, data.val_set
    data.setup("fit")
    data.setup("validate")
    assert data.train_set is train and data.val_set is val


def test_test_split_is_the_whole_test_file_in_order(synthetic_mnist):
    from conftest import synthetic_digits

    data = make(synthetic_mnist)
    data.setup("test")
    images, labels = synthetic_digits(50, seed=2)
    assert torch.equal(data.test_set.images, images)
    assert torch.equal(data.test_set.labels, labels.long())
    assert data.train_set is None  # testing does not load the training files


def test_batches_are_sliced_then_scaled_on_transfer(synthetic_mnist):
    data = make(synthetic_mnist, eval_batch_size=16, val_split=0)
    data.setup("test")
    images, labels = next(iter(data.test_dataloader()))
    assert images.dtype == torch.uint8 and images.shape == (16, 28, 28)
    assert torch.equal(images, data.test_set.images[:16]) and torch.equal(labels, data.test_set.labels[:16])
    scaled, same_labels = data.on_after_batch_transfer((images, labels), 0)
    assert scaled.shape == (16, 1, 28, 28) and scaled.dtype == torch.float32
    assert torch.allclose(scaled[:, 0], images.float() / 255)
    assert same_labels is labels


def test_evaluation_batches_have_their_own_size(synthetic_mnist):
    data = make(synthetic_mnist, batch_size=8, eval_batch_size=30, val_split=40)
    data.setup("fit")
    data.setup("test")
    assert [len(labels) for _, labels in data.train_dataloader()] == [8] * 20
    assert [len(labels) for _, labels in data.val_dataloader()] == [30, 10]
    assert [len(labels) for _, labels in data.test_dataloader()] == [30, 20]
    assert [len(labels) for _, labels in data.predict_dataloader()] == [30, 20]


def test_getitems_matches_getitem():
    images = torch.randint(0, 255, (10, 28, 28), dtype=torch.uint8)
    labels = torch.arange(10)
    dataset = InMemoryDigits(images, labels)
    batch_images, batch_labels = dataset.__getitems__([3, 1, 4])
    for row, index in enumerate([3, 1, 4]):
        assert torch.equal(batch_images[row], dataset[index][0])
        assert batch_labels[row] == dataset[index][1]


@pytest.mark.parametrize("on_device, expected", [(None, "meta"), (True, "meta"), (False, "cpu")])
def test_on_an_accelerator_the_data_sets_live_on_the_device(synthetic_mnist, on_device, expected):
    # The "meta" device stands in for a GPU: any device that is not the CPU.
    data = make(synthetic_mnist, val_split=40, batch_size=16, pin_memory=True, num_workers=2, on_device=on_device)
    data.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("meta")), world_size=1,
                                   global_rank=0, overfit_batches=0)
    data.setup("fit")
    data.setup("test")
    for dataset in (data.train_set, data.val_set, data.test_set):
        assert dataset.images.device.type == expected and dataset.labels.device.type == expected
    loader = data.train_dataloader()
    on_host = expected == "cpu"
    assert loader.pin_memory is on_host and loader.num_workers == (2 if on_host else 0)
    if not on_host:
        images, labels = next(iter(loader))  # sliced where the data lives, no copy from host memory
        assert images.device.type == "meta" and images.shape == (16, 28, 28) and labels.shape == (16,)


def test_on_a_cpu_the_data_sets_stay_in_host_memory(synthetic_mnist):
    data = make(synthetic_mnist, val_split=40)
    data.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cpu")), world_size=1)
    data.setup("fit")
    assert data.data_device() == torch.device("cpu") and data.train_set.images.device.type == "cpu"


@pytest.mark.parametrize(
    "kwargs, named",
    [({"batch_size": 0}, "batch_size=0"), ({"eval_batch_size": 0}, "eval_batch_size=0"),
     ({"val_split": -1}, "val_split=-1"), ({"val_split": 1.0}, "val_split=1.0"), ({"seed": -1}, "seed=-1"),
     ({"seed": 2**63}, "seed=9223372036854775808.*0 to 2\\*\\*63 - 1")],
)
def test_bad_values_are_refused_with_their_name(tmp_path, kwargs, named):
    with pytest.raises(UserError, match=named):
        MNISTDataModule(str(tmp_path), **kwargs)


def test_worker_processes_are_bounded_by_the_cpus(tmp_path):
    cpus = usable_cpus()
    assert MNISTDataModule(str(tmp_path), num_workers=cpus).hparams.num_workers == cpus
    with pytest.raises(UserError, match=f"num_workers={cpus + 1} is not valid: expected 0 to {cpus}, the CPUs"):
        MNISTDataModule(str(tmp_path), num_workers=cpus + 1)


def test_a_split_that_leaves_no_training_image_is_refused(synthetic_mnist):
    data = make(synthetic_mnist, val_split=200)
    with pytest.raises(UserError, match="leaves no training images"):
        data.setup("fit")


def test_images_and_labels_of_different_sizes_are_refused(tmp_path):
    from conftest import synthetic_digits, write_idx

    write_mnist_like(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", synthetic_digits(150)[1])
    with pytest.raises(UserError, match="200 images but .* 150 labels"):
        make(tmp_path).setup("fit")


def test_overfitting_trains_on_the_same_batches_every_epoch(synthetic_mnist, tmp_path):
    """Lightning turns shuffling off for `overfit_batches` only in samplers it can see; digitlab's batch sampler
    shuffles by itself, so the data module must turn it off too (configs/debug/overfit.yaml)."""
    labels_seen: dict[int, list[list[int]]] = {}

    class RecordLabels(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            labels_seen.setdefault(trainer.current_epoch, []).append(batch[1].tolist())

    trainer = Trainer(overfit_batches=3, max_epochs=2, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, callbacks=[RecordLabels()],
                      default_root_dir=tmp_path)
    trainer.fit(ScratchMLP(), make(synthetic_mnist, val_split=40, batch_size=16))
    assert len(labels_seen[0]) == 3 and labels_seen[0] == labels_seen[1]


def test_a_fit_then_its_test_read_each_file_once(synthetic_mnist, monkeypatch):
    """prepare_data runs for each stage (the fit, then the test after it): the test files the fit read are kept."""
    from lightning.pytorch.trainer.states import TrainerFn

    data = make(synthetic_mnist, val_split=40)
    read = []
    load = data._load
    monkeypatch.setattr(data, "_load", lambda part: read.append(part) or load(part))
    data.trainer = SimpleNamespace(state=SimpleNamespace(fn=TrainerFn.FITTING), world_size=1, global_rank=0,
                                   strategy=SimpleNamespace(root_device=torch.device("cpu")))
    data.prepare_data()
    data.setup("fit")
    data.trainer.state.fn = TrainerFn.TESTING
    data.prepare_data()
    data.setup("test")
    assert read == ["train", "test"]
    assert len(data.test_set) == 50 and len(data.train_set) == 160
