"""`MNISTDataModule`: verified MNIST in memory (on the GPU when training there) as uint8 tensors, split once,
batched by slicing."""

from __future__ import annotations

import math
import os
import warnings
from typing import Any, Optional, Union

import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader, Dataset

from digitlab.batch import PAD_LABEL, UNKNOWN_LABEL
from digitlab.data.augmentation import RandomAffine
from digitlab.data.files import MNIST_FILES, locate, resolve_data_dir
from digitlab.data.idx import read_idx
from digitlab.data.own_images import load_images
from digitlab.data.sampling import EpochShuffle, ResumableLoader, TensorBatches
from digitlab.errors import SkippedFileWarning, UserError


# Lightning warns that its DistributedSampler repeats images in evaluation; padding (below) prevents that.
warnings.filterwarnings("ignore", message=r"Using `DistributedSampler` with the dataloaders")
# ...and that an empty list of validation loaders may be a mistake; here it means `val_split: 0`.
warnings.filterwarnings("ignore", message=r"Total length of `list` across ranks is zero")



class InMemoryDigits(Dataset):
    """Images ``[N, 28, 28]`` uint8 and labels ``[N]`` int64 held in memory.

    ``__getitems__`` lets the DataLoader fetch a whole batch with one tensor index instead of one
    sample at a time, while samplers (including Lightning's distributed ones) still choose the indices.
    Indices past the real images, up to `length`, are padding: a blank image labelled `PAD_LABEL`.
    `names`, when the images come from files (``predict_images``), holds each image's file name.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        length: Optional[int] = None,
        names: Optional[list[str]] = None,
    ) -> None:
        self.images = images
        self.labels = labels
        self.length = len(labels) if length is None else length
        self.names = names

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: Union[int, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """One image and its label; or, for a 1-D tensor of indices (a `TensorBatches` batch), a whole batch."""
        if isinstance(index, torch.Tensor) and index.dim() == 1:
            return self.__getitems__(index)
        images, labels = self.__getitems__([index])
        return images[0], labels[0]

    def __getitems__(self, indices: Union[list[int], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        # index_select, not images[index]: a much faster gather on a CPU, which a small model notices.
        index = torch.as_tensor(indices, device=self.images.device)
        if self.length == len(self.labels):
            return self.images.index_select(0, index), self.labels.index_select(0, index)
        real = index < len(self.labels)
        index = index.clamp(max=len(self.labels) - 1)
        images = self.images.index_select(0, index) * real[:, None, None]
        return images, torch.where(real, self.labels.index_select(0, index), PAD_LABEL)

    def padded_to_multiple_of(self, processes: int) -> "InMemoryDigits":
        """This data set, padded so that `processes` replicas get equal shares without repeating an image.

        Lightning's `DistributedSampler` would otherwise pad by repeating images, which counts them twice.
        """
        return InMemoryDigits(self.images, self.labels, math.ceil(len(self.labels) / processes) * processes)

    def to(self, device: torch.device) -> "InMemoryDigits":
        return InMemoryDigits(self.images.to(device), self.labels.to(device), self.length, self.names)


def keep_batch(batch: Any) -> Any:
    """Collate function for `InMemoryDigits`: ``__getitems__`` already returns a batch."""
    return batch


class MNISTDataModule(LightningDataModule):
    """MNIST from its four official IDX files, verified, held in memory, scaled per batch on the device.

    Args:
        data_dir: Folder with the four MNIST files (plain or .gz), flat or in torchvision's ``MNIST/raw/``
            layout. Default: ``$DIGITLAB_DATA_DIR``, else ``data/``.
        val_split: Validation images taken from the 60,000 training images: a count (``5000``) or a
            fraction (``0.2``). ``0`` means no validation. The test set is always the official 10,000.
        seed: Seed of the train/validation split and of the shuffling, 0 to 2**63 - 1 (each epoch's order
            depends only on the seed and the epoch, so a resumed run sees the same batches); the same seed, the
            same split.
        batch_size: Images per training batch, per process: under DDP every process gets this many, so the
            global batch is ``batch_size * devices * num_nodes``. When a split's size is not a multiple of
            the number of processes, it is padded with blank images labelled -100 (ignored by the loss and
            the metrics) rather than repeated, so every image counts exactly once.
        eval_batch_size: Images per validation, test and predict batch, per process. Evaluation keeps no
            gradient, so large batches cost little memory and fewer, larger batches are faster; the
            metrics are the same whatever the size.
        num_workers: DataLoader worker processes, at most the number of CPUs this process may use. The data
            is already in memory, so 0 is fastest; data on a GPU (`on_device`) uses none.
        pin_memory: Pin batches in page-locked memory, for a faster copy to a GPU (with ``on_device: false``).
        on_device: Keep the data sets on the training device and slice each batch there: no copy from host
            memory per batch, no worker process (MNIST is 55 MB). ``None``: on when the trainer runs on a GPU
            (or another accelerator), off on a CPU.
        download: Download the files from torchvision's mirrors when they are not found in ``data_dir``.
        verify: Check shapes and MD5 against the official MNIST files. Turn off only to use other data
            in the same IDX layout.
        predict_images: Your own pictures for ``digitlab predict``, instead of the MNIST test set: a PNG or
            JPEG file, a folder of them, or a list of files and folders. Any size, colour or greyscale, dark
            digit on light or the reverse: each becomes a 28×28 MNIST-like digit. A file that is not a
            readable picture is named in a warning and skipped. The MNIST files are then not needed.
        augment_rotation: Training images only, off at 0: rotate each by up to this many degrees either way.
        augment_scale: Training images only, off at 0: resize each by up to this share either way (0.1: 90 % to
            110 %).
        augment_translation: Training images only, off at 0: shift each by up to this share of its side along
            each axis (0.1: 2.8 pixels).
            The three together are one random affine distortion per image, applied to whole batches on their
            device; the draws depend only on `seed`, the epoch, the batch's position and the process's rank,
            so a resumed run distorts exactly as the uninterrupted one. Off while overfitting a few batches
            (``trainer.overfit_batches``), which must be the same every epoch.
    """

    def __init__(
        self,
        data_dir: Optional[str] = None,
        val_split: Union[int, float] = 5000,
        seed: int = 42,
        batch_size: int = 128,
        eval_batch_size: int = 1000,
        num_workers: int = 0,
        pin_memory: bool = False,
        on_device: Optional[bool] = None,
        download: bool = True,
        verify: bool = True,
        predict_images: Optional[Union[str, list[str]]] = None,
        augment_rotation: float = 0.0,
        augment_scale: float = 0.0,
        augment_translation: float = 0.0,
    ) -> None:
        super().__init__()
        _check_value("batch_size", batch_size, batch_size >= 1, "a positive integer")
        _check_value("eval_batch_size", eval_batch_size, eval_batch_size >= 1, "a positive integer")
        _check_value("seed", seed, 0 <= seed < 2**63, "an integer from 0 to 2**63 - 1")
        cpus = usable_cpus()
        _check_value("num_workers", num_workers, 0 <= num_workers <= cpus,
                     f"0 to {cpus}, the CPUs this process may use (the data is in memory: 0 is fastest)")
        _check_value("val_split", val_split, val_split >= 0, "0 (no validation), a count, or a fraction in [0, 1)")
        if isinstance(val_split, float):
            _check_value("val_split", val_split, val_split < 1, "a fraction below 1 (or a count of images)")
        _check_value("augment_rotation", augment_rotation, 0 <= augment_rotation <= 180, "0 to 180 degrees")
        _check_value("augment_scale", augment_scale, 0 <= augment_scale <= 0.9, "a share from 0 to 0.9")
        _check_value("augment_translation", augment_translation, 0 <= augment_translation <= 1, "a share from 0 to 1")
        self.save_hyperparameters()
        self.augmentation = RandomAffine(augment_rotation, augment_scale, augment_translation, seed)
        self.data_dir = resolve_data_dir(data_dir)
        self.train_set: Optional[InMemoryDigits] = None
        self.val_set: Optional[InMemoryDigits] = None
        self.test_set: Optional[InMemoryDigits] = None
        self.predict_set: Optional[InMemoryDigits] = None
        # What prepare_data read and verified, kept for setup in the same process instead of reading it again.
        self._prepared: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._prepared_pictures: Optional[InMemoryDigits] = None
        self._train_loader: Optional[ResumableLoader] = None
        self._resume_at: Optional[dict[str, int]] = None  # a checkpoint's training position, for the next loader

    @property
    def num_classes(self) -> int:
        return 10

    def prepare_data(self) -> None:
        if self._predicts_own_images():  # no MNIST file needed; the pictures are checked before the run starts
            self._prepared_pictures = self._load_own_images()
            return
        # Runs on one process per node: find or download, then verify, so that no rank races a download.
        # It also checks the split, before Lightning creates the run's folder. Only the files that the
        # running stage uses are needed (testing needs no training files), and each is read once: the test after
        # fit finds the test files that the fit read.
        stage = self.trainer.state.fn if self.trainer is not None else None
        if stage in (None, TrainerFn.FITTING, TrainerFn.VALIDATING) and not self._has("train", self.train_set):
            self._prepared["train"] = self._load("train")
            self._validation_count(len(self._prepared["train"][1]))
        if stage in (None, TrainerFn.FITTING, TrainerFn.TESTING, TrainerFn.PREDICTING) and \
                not self._has("test", self.test_set):
            self._prepared["test"] = self._load("test")

    def _has(self, part: str, dataset: Optional[InMemoryDigits]) -> bool:
        """Whether `part` (train, test) was read already: prepared for setup, or set up."""
        return part in self._prepared or dataset is not None

    def setup(self, stage: Optional[str] = None) -> None:
        # Idempotent: the split is made once, whatever the number of calls or stages.
        if stage in (None, "fit", "validate") and self.train_set is None:
            images, labels = self._prepared.pop("train", None) or self._load("train")
            self.train_set, self.val_set = self._split(images, labels)
        if stage in (None, "test", "predict") and self.test_set is None and not self._predicts_own_images(stage):
            self.test_set = InMemoryDigits(*(self._prepared.pop("test", None) or self._load("test")))
        if stage in (None, "predict") and self.hparams.predict_images is not None and self.predict_set is None:
            prepared = self._prepared_pictures
            self.predict_set = prepared if prepared is not None else self._load_own_images()
            self._prepared_pictures = None
        self._move_to_data_device()
        if self.trainer is not None:  # logged with the hyperparameters: batch_size is per process
            self.save_hyperparameters({"global_batch_size": self.hparams.batch_size * self.trainer.world_size})

    def data_device(self) -> torch.device:
        """Where the data sets live: the trainer's device with `on_device` (the default on an accelerator)."""
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        on_device = self.hparams.on_device if self.hparams.on_device is not None else device.type != "cpu"
        return device if on_device else torch.device("cpu")

    def _move_to_data_device(self) -> None:
        device = self.data_device()
        for name in ("train_set", "val_set", "test_set", "predict_set"):
            dataset = getattr(self, name)
            if dataset is not None and dataset.images.device != device:
                setattr(self, name, dataset.to(device))

    def _load(self, part: str) -> tuple[torch.Tensor, torch.Tensor]:
        keys = [f"{part}_images", f"{part}_labels"]
        paths = locate(self.data_dir, keys, download=self.hparams.download)
        images, labels = (read_idx(paths[k], MNIST_FILES[k], verify=self.hparams.verify) for k in keys)
        if len(images) != len(labels):
            raise UserError(
                f"{paths[keys[0]]} holds {len(images)} images but {paths[keys[1]]} holds {len(labels)} labels. "
                "Images and labels must come from the same data set."
            )
        return images, labels.long()

    def _validation_count(self, total: int) -> int:
        val_split = self.hparams.val_split
        n_val = round(val_split * total) if isinstance(val_split, float) else int(val_split)
        if n_val >= total:
            raise UserError(
                f"data.val_split={val_split} leaves no training images ({total} in all). "
                "Use a smaller count or a fraction such as 0.1."
            )
        return n_val

    def _split(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[InMemoryDigits, Optional[InMemoryDigits]]:
        total = len(labels)
        n_val = self._validation_count(total)
        if n_val == 0:
            return InMemoryDigits(images, labels), None
        order = torch.randperm(total, generator=torch.Generator().manual_seed(self.hparams.seed))
        train_idx, val_idx = order[n_val:].sort().values, order[:n_val].sort().values
        return InMemoryDigits(images[train_idx], labels[train_idx]), InMemoryDigits(images[val_idx], labels[val_idx])

    def state_dict(self) -> dict[str, Any]:
        """Where training is within its epoch, saved in every checkpoint: a run resumed from one halfway through an
        epoch continues with exactly the batches the uninterrupted run would have seen next, on every process.

        Lightning also saves the loader's own state (`ResumableLoader`), but restores it only when the loader is
        made after the checkpoint's loops are restored; a model whose optimizer asks for
        ``trainer.estimated_stepping_batches`` (the MLP's and bncnn's schedules) has it made earlier, and the
        position would be lost. The data module's state is restored before anything is made."""
        return {"train_position": self._train_loader.state_dict()} if self._train_loader is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._resume_at = state_dict.get("train_position")
        if self._train_loader is not None and self._resume_at is not None:  # already made: resume it
            self._train_loader.load_state_dict(self._resume_at)
            self._resume_at = None

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.hparams.batch_size, shuffle=True)

    def val_dataloader(self) -> Union[DataLoader, list]:
        # An empty list tells Lightning there is nothing to validate (val_split: 0).
        return self._loader(self.val_set, self.hparams.eval_batch_size) if self.val_set is not None else []

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, self.hparams.eval_batch_size)

    def predict_dataloader(self) -> DataLoader:
        # Lightning already predicts without repeats (UnrepeatedDistributedSampler): no padding needed.
        dataset = self.predict_set if self.hparams.predict_images is not None else self.test_set
        return self._loader(dataset, self.hparams.eval_batch_size, pad=False)

    def _predicts_own_images(self, stage: Optional[str] = None) -> bool:
        """Whether this stage (else the trainer's) predicts `predict_images`, and so needs no MNIST file."""
        if self.hparams.predict_images is None:
            return False
        if stage is None and self.trainer is not None:
            stage = self.trainer.state.fn
        return stage == "predict"

    def _load_own_images(self) -> InMemoryDigits:
        sources = self.hparams.predict_images
        loaded = load_images(sources)
        for name, reason in loaded.skipped:
            rank_zero_warn(f"skipped {name}: {reason}", category=SkippedFileWarning)
        if not loaded.names:
            found = (
                f"none of the {len(loaded.skipped)} files is a readable picture (each is named above)"
                if loaded.skipped
                else "no file found (subfolders and hidden files are not searched)"
            )
            raise UserError(
                f"data.predict_images={sources!r}: {found}. Give PNG or JPEG pictures of digits: a file, a folder "
                "of them, or a list of files and folders."
            )
        labels = torch.full((len(loaded.names),), UNKNOWN_LABEL)
        return InMemoryDigits(loaded.images, labels, names=loaded.names)

    def _loader(self, dataset: Optional[InMemoryDigits], batch_size: int, shuffle: bool = False,
                pad: bool = True) -> DataLoader:
        assert dataset is not None, "setup() must run before the dataloaders are requested"
        processes = self.trainer.world_size if self.trainer is not None else 1
        if pad and processes > 1:
            dataset = dataset.padded_to_multiple_of(processes)
        in_host_memory = dataset.images.device.type == "cpu"
        workers = self.hparams.num_workers if in_host_memory else 0  # worker processes cannot share a GPU's memory
        common = dict(collate_fn=keep_batch, num_workers=workers, persistent_workers=workers > 0,
                      pin_memory=self.hparams.pin_memory and in_host_memory)
        if shuffle and self.trainer is not None and self.trainer.overfit_batches > 0:
            # Overfitting means the same batches every epoch. Lightning turns shuffling off for that, but only
            # for a loader whose sampler it can see; digitlab's batch sampler shuffles by itself.
            shuffle = False
        if shuffle:
            # Shuffled by (seed, epoch) alone, each process taking its share (its rank), so that resuming
            # reproduces the batches on every process; batches are tensor slices of one permutation.
            rank = self.trainer.global_rank if self.trainer is not None else 0
            order = EpochShuffle(len(dataset), self.hparams.seed, rank, processes)
            loader = ResumableLoader(dataset, sampler=TensorBatches(order, batch_size), batch_size=None, **common)
            if self.trainer is not None:
                loader.batches_done = lambda: self.trainer.fit_loop.epoch_loop.batch_progress.current.processed
            if self._resume_at is not None:
                loader.load_state_dict(self._resume_at)
                self._resume_at = None
            self._train_loader = loader
            return loader
        return DataLoader(dataset, batch_size=batch_size, **common)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 ``[N, 28, 28]`` -> float ``[N, 1, 28, 28]`` in [0, 1], on the batch's device; training batches
        distorted by `augmentation` when it is on."""
        if isinstance(batch, torch.Tensor):  # the model's example input (model summary): already a model input
            return batch
        images, labels = batch
        images = to_model_input(images)
        trainer = self.trainer
        # Overfitting a few batches (`overfit_batches`) means the same batches every epoch: not distorted anew.
        if self.augmentation.active and trainer is not None and trainer.training and not trainer.overfit_batches:
            # `ready` counts the epoch's batches before this one, and a resumed run restores it.
            position = trainer.fit_loop.epoch_loop.batch_progress.current.ready
            images = self.augmentation(images, self.augmentation.generator(trainer.current_epoch, position,
                                                                           trainer.global_rank))
        return images, labels


def usable_cpus() -> int:
    """How many CPUs this process may run on: its affinity, which taskset, a cgroup's cpuset or SLURM restrict."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def to_model_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 digits ``[N, 28, 28]`` -> float ``[N, 1, 28, 28]`` in [0, 1]: what a model's `forward` takes."""
    return images.unsqueeze(1).float().div_(255)


def _check_value(name: str, value: Any, ok: bool, expected: str) -> None:
    if not ok:
        raise UserError(f"data.{name}={value!r} is not valid: expected {expected}. Fix it in the config's "
                        f"`data:` section or with `--data.{name}`.")
