"""Callbacks every `digitlab` run gets: safety nets for training, pictures for TensorBoard."""

from lightning.pytorch.callbacks import Callback

from digitlab.training.callbacks.augmented import AugmentationExamples
from digitlab.training.callbacks.checkpoint import ModelCheckpoint
from digitlab.training.callbacks.class_means import ClassMeans
from digitlab.training.callbacks.confusion import ConfusionMatrix
from digitlab.training.callbacks.examples import ClassExamples
from digitlab.training.callbacks.finite_loss import StopOnNonFiniteLoss
from digitlab.training.callbacks.interrupt import SaveOnInterrupt
from digitlab.training.callbacks.mistakes import WorstMistakes
from digitlab.training.callbacks.predictions import PredictionWriter


def default_callbacks() -> list[Callback]:
    """New instances of the callbacks the `digitlab` command adds to every trainer."""
    return [StopOnNonFiniteLoss(), SaveOnInterrupt()]


def picture_callbacks() -> list[Callback]:
    """New instances of the TensorBoard picture callbacks (`digitlab fit|validate|test`; ``--pictures false``
    leaves them out). They draw on rank 0 only, and nothing without a TensorBoard logger."""
    return [ClassExamples(), AugmentationExamples(), ClassMeans(), ConfusionMatrix(), WorstMistakes()]


__all__ = [
    "AugmentationExamples",
    "ClassExamples",
    "ClassMeans",
    "ConfusionMatrix",
    "ModelCheckpoint",
    "PredictionWriter",
    "SaveOnInterrupt",
    "StopOnNonFiniteLoss",
    "WorstMistakes",
    "default_callbacks",
    "picture_callbacks",
]
