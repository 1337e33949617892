"""The batch contract between the data and the models: what a data loader hands a model's steps.

Both sides import this small module, so that no model depends on the data package (nor the data package on
the models).

- A batch is ``(images, targets)``: on the model's side of the transfer, ``[N, 1, 28, 28]`` floats in [0, 1]
  and ``[N]`` int64 class indices.
- `PAD_LABEL` marks padding: under DDP a split is padded with blank images labelled -100 so that every
  process gets an equal share without repeating an image. Losses and metrics must ignore it.
- `UNKNOWN_LABEL` is the target of a picture whose digit is not known (your own pictures in ``predict``).
"""

from __future__ import annotations

import torch

Batch = tuple[torch.Tensor, torch.Tensor]

PAD_LABEL = -100  # PyTorch's default ignore_index: cross-entropy and the metrics skip these samples
UNKNOWN_LABEL = -1
