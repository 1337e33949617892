"""MNIST data: IDX files, verification, download, and the LightningDataModule."""

from digitlab.data.mnist import MNISTDataModule

__all__ = ["MNISTDataModule"]
