"""How the pictures look: digit grids (torchvision's `make_grid`) and labelled figures (matplotlib), as CHW.

Both are imported when a picture is drawn: `digitlab --help` imports this module and draws nothing."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def digit_grid(images: torch.Tensor) -> torch.Tensor:
    """``[N, 1, H, W]`` floats in [0, 1] -> one row of tiles with grey borders, ``[3, H', W']`` (CHW)."""
    from torchvision.utils import make_grid

    return make_grid(images.detach().float().cpu(), nrow=len(images), padding=2, pad_value=0.5)


def confusion_matrix_image(matrix: torch.Tensor, title: str) -> torch.Tensor:
    """A ``[C, C]`` confusion matrix (rows: true class, columns: predicted) with its counts, as uint8 CHW."""
    from matplotlib.figure import Figure

    counts = matrix.detach().cpu().numpy()
    figure = Figure(figsize=(5.5, 5), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    axes.imshow(counts, cmap="Blues")
    classes = range(len(counts))
    axes.set(xticks=classes, yticks=classes, xlabel="predicted class", ylabel="true class", title=title)
    threshold = counts.max() / 2
    for (row, column), count in np.ndenumerate(counts):
        color = "white" if count > threshold else "black"
        axes.text(column, row, str(count), ha="center", va="center", fontsize=7, color=color)
    return _chw(figure)


def captioned_digits_image(images: torch.Tensor, captions: Sequence[str], columns: int = 8) -> torch.Tensor:
    """``[N, 1, H, W]`` floats in [0, 1], each tile with its caption above it, as uint8 CHW."""
    from matplotlib.figure import Figure

    columns = min(columns, len(images))
    rows = math.ceil(len(images) / columns)
    figure = Figure(figsize=(1.15 * columns, 1.4 * rows), dpi=100, layout="constrained")
    for index, (image, caption) in enumerate(zip(images.detach().float().cpu(), captions)):
        axes = figure.add_subplot(rows, columns, index + 1)
        axes.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=1)
        axes.set_title(caption, fontsize=8)
        axes.set_axis_off()
    return _chw(figure)


def _chw(figure: Figure) -> torch.Tensor:
    """Render a figure off-screen (no pyplot, no display) to a ``[3, H, W]`` uint8 tensor."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    rgb = np.asarray(canvas.buffer_rgba())[..., :3]
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1)
