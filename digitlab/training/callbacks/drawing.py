"""How the pictures look: digit grids (torchvision's `make_grid`) and labelled pictures drawn with Pillow, as CHW.

Pillow, not matplotlib: matplotlib's layout engine and a hundred text artists make a confusion matrix slow to
draw after every validation epoch; Pillow draws the same cells, counts and labels in a fraction of that time.
Both imports happen when a picture is drawn: `digitlab --help` imports this module, draws nothing.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from PIL import Image, ImageFont

WHITE, BLACK, GREY = (255, 255, 255), (0, 0, 0), (90, 90, 90)
LIGHT, DARK = np.array([247, 251, 255]), np.array([8, 48, 107])  # the ends of matplotlib's "Blues"
CELL = 40  # pixels per confusion-matrix cell
TILE = 3  # each 28x28 digit of the mistakes picture is drawn 3 times larger


def digit_grid(images: torch.Tensor) -> torch.Tensor:
    """``[N, 1, H, W]`` floats in [0, 1] -> one row of tiles with grey borders, ``[3, H', W']`` (CHW)."""
    from torchvision.utils import make_grid

    return make_grid(images.detach().float().cpu(), nrow=len(images), padding=2, pad_value=0.5)


def confusion_matrix_image(matrix: torch.Tensor, title: str) -> torch.Tensor:
    """A ``[C, C]`` confusion matrix (rows: true class, columns: predicted) with its counts, as uint8 CHW.

    Each cell is shaded from white to dark blue by its count (the largest is darkest), its count written on
    it; the classes are numbered along both sides, and the title is written above.
    """
    from PIL import Image, ImageDraw

    counts = matrix.detach().cpu().long().numpy()
    size = len(counts)
    left, top, bottom, right = 64, 48, 56, 24
    width, height = left + size * CELL + right, top + size * CELL + bottom
    shade = counts / max(int(counts.max()), 1)
    cells = (LIGHT + (DARK - LIGHT) * shade[..., None]).round().astype(np.uint8)
    picture = Image.new("RGB", (width, height), WHITE)
    picture.paste(Image.fromarray(cells).resize((size * CELL, size * CELL), Image.NEAREST), (left, top))
    draw = ImageDraw.Draw(picture)
    small, label = _font(11), _font(13)
    draw.text((width / 2, top / 2), title, fill=BLACK, font=label, anchor="mm")
    for k in range(size):
        centre = k * CELL + CELL / 2
        draw.text((left + centre, top + size * CELL + 10), str(k), fill=BLACK, font=label, anchor="mt")
        draw.text((left - 10, top + centre), str(k), fill=BLACK, font=label, anchor="rm")
    for (row, column), count in np.ndenumerate(counts):
        colour = WHITE if shade[row, column] > 0.5 else BLACK
        draw.text((left + column * CELL + CELL / 2, top + row * CELL + CELL / 2), str(count), fill=colour,
                  font=small, anchor="mm")
    draw.text((left + size * CELL / 2, height - 12), "predicted class", fill=BLACK, font=label, anchor="mb")
    _vertical_text(picture, "true class", (14, top + size * CELL / 2), label)
    return _chw(picture)


def captioned_digits_image(images: torch.Tensor, captions: Sequence[str], columns: int = 8) -> torch.Tensor:
    """``[N, 1, H, W]`` floats in [0, 1], each tile with its caption (one or more lines) above it, as uint8 CHW."""
    from PIL import Image, ImageDraw

    columns = min(columns, len(images))
    rows = math.ceil(len(images) / columns)
    pixels = (images.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
    tile_height, tile_width = pixels.shape[2] * TILE, pixels.shape[3] * TILE
    font = _font(11)
    lines = max(caption.count("\n") + 1 for caption in captions)
    caption_height, gap = 14 * lines + 4, 10
    cell_width, cell_height = max(tile_width, 96) + gap, caption_height + tile_height + gap
    picture = Image.new("RGB", (columns * cell_width + gap, rows * cell_height + gap), WHITE)
    draw = ImageDraw.Draw(picture)
    for index, (digit, caption) in enumerate(zip(pixels, captions)):
        x = gap + (index % columns) * cell_width
        y = gap + (index // columns) * cell_height
        tile = Image.fromarray(digit[0].numpy(), mode="L").resize((tile_width, tile_height), Image.NEAREST)
        picture.paste(tile, (x + (cell_width - gap - tile_width) // 2, y + caption_height))
        draw.multiline_text((x + (cell_width - gap) / 2, y), caption, fill=BLACK, font=font, anchor="ma",
                            align="center", spacing=2)
    return _chw(picture)


@functools.lru_cache(maxsize=None)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's built-in font at `size` pixels (its fixed bitmap font where Pillow lacks FreeType)."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError):  # Pillow < 10.1, or built without FreeType
        return ImageFont.load_default()


def _vertical_text(picture: Image.Image, text: str, centre: tuple[float, float], font) -> None:
    """Write `text` turned a quarter anticlockwise (read bottom to top), centred on `centre`."""
    from PIL import Image, ImageDraw

    left, top, right, bottom = font.getbbox(text)
    strip = Image.new("RGB", (right - left + 2, bottom - top + 2), WHITE)
    ImageDraw.Draw(strip).text((1 - left, 1 - top), text, fill=BLACK, font=font)
    strip = strip.rotate(90, expand=True)
    picture.paste(strip, (round(centre[0] - strip.width / 2), round(centre[1] - strip.height / 2)))


def _chw(picture: Image.Image) -> torch.Tensor:
    """A Pillow RGB picture as a ``[3, H, W]`` uint8 tensor."""
    return torch.from_numpy(np.asarray(picture).copy()).permute(2, 0, 1)
