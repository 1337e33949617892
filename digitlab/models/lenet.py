"""LeNet-5 as in the seed tutorial: two 3x3 convolutions with average pooling, three dense layers."""

from __future__ import annotations

import torch
from torch import nn

from digitlab.models.base import DigitModel
from digitlab.models.registry import register_model


MNIST_MEAN, MNIST_STD = 0.1307, 0.3081  # of the training images' pixels in [0, 1]


@register_model("lenet5")
class LeNet5(DigitModel):
    """LeNet-5: conv 3x3x6, avg-pool, conv 3x3x16, avg-pool, dense 120-84-10 (60,074 parameters)."""

    def __init__(self, standardize: bool = False, **kwargs) -> None:
        """
        Args:
            standardize: Shift and scale the pixels to MNIST's mean 0.1307 and standard deviation 0.3081
                before the first convolution (the seed feeds [0, 1]); it speeds up early training.
        """
        super().__init__(**kwargs)
        self.standardize = standardize
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, kernel_size=3),  # 28 -> 26
            nn.ReLU(),
            nn.AvgPool2d(2),  # 26 -> 13
            nn.Conv2d(6, 16, kernel_size=3),  # 13 -> 11
            nn.ReLU(),
            nn.AvgPool2d(2),  # 11 -> 5
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, self.num_classes),
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Keras' defaults, as in the seed: Glorot-uniform weights, zero biases. PyTorch's default init
        # learns noticeably slower here in the first epoch.
        for layer in self.modules():
            if isinstance(layer, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.standardize:
            x = (x - MNIST_MEAN) / MNIST_STD
        return self.classifier(self.features(x))
