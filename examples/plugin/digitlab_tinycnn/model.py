"""TinyCNN: two small convolutions and one dense layer, a digitlab model written outside digitlab."""

from __future__ import annotations

import torch
from torch import nn

from digitlab.errors import UserError
from digitlab.models import DigitModel


class TinyCNN(DigitModel):
    """Small CNN: conv 3x3 (channels) -> max-pool -> conv 3x3 (2 x channels) -> max-pool -> dense 10.

    About 9,100 parameters with the default 8 channels. Everything but the layers and `forward` — loss,
    metrics, logging, test and predict steps, the ``optimizer`` and ``lr_scheduler`` arguments — comes
    from `DigitModel`.

    Args:
        channels: Feature maps of the first convolution; the second has twice as many.
        dropout: Dropout probability before the dense layer.
    """

    def __init__(self, channels: int = 8, dropout: float = 0.1, **kwargs) -> None:
        super().__init__(**kwargs)  # optimizer, lr_scheduler, num_classes: DigitModel's arguments
        if channels < 1:
            raise UserError(f"model.channels={channels} is not valid: expected a positive integer.")
        if not 0 <= dropout < 1:
            raise UserError(f"model.dropout={dropout} is not valid: expected a probability in [0, 1).")
        self.features = nn.Sequential(
            nn.Conv2d(1, channels, kernel_size=3, padding=1),  # 28 x 28
            nn.ReLU(),
            nn.MaxPool2d(2),  # 14 x 14
            nn.Conv2d(channels, 2 * channels, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 7 x 7
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(2 * channels * 7 * 7, self.num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, 1, 28, 28]`` float images in [0, 1] -> ``[N, num_classes]`` logits."""
        return self.classifier(self.features(x))
