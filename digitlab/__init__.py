"""digitlab: handwritten-digit classifiers on MNIST with PyTorch Lightning."""

__version__ = "0.1.0"
