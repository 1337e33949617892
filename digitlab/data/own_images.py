"""Your own digit pictures as MNIST digits: decode, greyscale, fix polarity, crop, scale to 20 px, centre in 28×28.

MNIST's own recipe (LeCun et al.): each digit was scaled, keeping its aspect ratio, to fit a 20×20 box, then
placed in a 28×28 image so that its centre of mass (pixel intensities as weights) lies at the image's centre.
`to_mnist` does the same to a picture of any size, colour or greyscale, dark on light or light on dark, and
returns what `MNISTDataModule` holds for MNIST itself: uint8 ``[28, 28]``, white digit on black.

Pillow and torchvision are imported by the functions that use them: every command but `digitlab report` imports
this module (through `MNISTDataModule`), and only `digitlab predict` reads pictures.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from digitlab.errors import UserError
from digitlab.utils.text import natural_key

if TYPE_CHECKING:
    from PIL import Image

SIZE = 28  # MNIST images are SIZE × SIZE ...
BOX = 20  # ... with the digit scaled to fit BOX × BOX, keeping its aspect ratio
CENTRE = 14.0  # where MNIST's centres of mass lie (row and column, in pixel indices; measured on the test set)
INK = 0.1  # after stretching ink to [0, 1], fainter pixels are noise (paper texture, JPEG artefacts): set to 0
STROKE = 0.3  # the digit's box holds the pixels above this level (isolated noise stays below) ...
EDGE, FAINT = 0.05, 0.15  # ... grown by their faint edges (above FAINT), up to EDGE × the box's size around it
MIN_CONTRAST = 0.05  # a picture whose ink stands out less than this from its background holds no digit
MIN_SIDE = 4  # pixels: on a narrower picture the background (`_background`) cannot be told from the ink
# Larger pictures are refused before they are decoded. A 12 MP phone photo (4032×3024) fits; a small, highly
# compressed PNG far above the limit would decode to gigabytes (Pillow's own limit is 179 MP).
MAX_PIXELS = 4096 * 4096

Sources = Union[str, Path, Sequence[Union[str, Path]]]


class ImageError(Exception):
    """One file that cannot be used as a digit: empty, not an image, corrupt, or blank."""


class PictureTooLarge(ImageError):
    """A picture with more pixels than the limit, refused from its header before it is decoded."""


@dataclass
class OwnImages:
    """What `load_images` made of the files: the usable ones as MNIST digits, the others with the reason."""

    images: torch.Tensor  # uint8 [N, 28, 28], white digit on black
    names: list[str]  # one per image: its path as found
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why it was skipped)


def find_image_files(sources: Sources) -> list[Path]:
    """The files named by `sources`: a file, or a folder (its files, not its subfolders nor hidden files), or a
    list of them, in the order given, a folder's files in natural order (``2.png`` before ``10.png``).

    Files are not checked here: whatever is not a readable picture is reported by `load_images`.
    """
    files = []
    for source in [sources] if isinstance(sources, (str, Path)) else sources:
        path = Path(source)
        if path.is_dir():
            entries = (p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
            files.extend(sorted(entries, key=lambda entry: natural_key(entry.name)))
        elif path.exists():
            files.append(path)
        else:
            raise UserError(
                f"data.predict_images: {path} does not exist. Give a picture file, a folder of pictures, or a list "
                "of them (`--data.predict_images my_digits/`)."
            )
    return files


def load_images(sources: Sources) -> OwnImages:
    """Read and convert every file of `sources`; skip (and record) those that are not usable digit pictures."""
    images, names, skipped = [], [], []
    for path in find_image_files(sources):
        try:
            images.append(prepare_picture(path))
            names.append(str(path))
        except ImageError as error:
            skipped.append((str(path), str(error)))
    stacked = torch.stack(images) if images else torch.empty(0, SIZE, SIZE, dtype=torch.uint8)
    return OwnImages(stacked, names, skipped)


def prepare_picture(path: Union[str, Path, bytes], max_pixels: int = MAX_PIXELS) -> torch.Tensor:
    """One picture file, or its content as bytes (`digitlab serve` receives pictures so), as an MNIST digit,
    uint8 ``[28, 28]``; `ImageError` says why it cannot be one.

    Whatever goes wrong with one picture is that picture's reason to be skipped: it never stops the others.
    """
    try:
        return to_mnist(read_greyscale(path, max_pixels))
    except ImageError:
        raise
    except Exception as error:  # an odd picture that no check above foresaw: named, with what went wrong
        raise ImageError(f"could not be prepared ({type(error).__name__}: {error})") from error


def read_greyscale(path: Union[str, Path, bytes], max_pixels: int = MAX_PIXELS) -> torch.Tensor:
    """A picture file (PNG, JPEG, and whatever else Pillow reads; first frame), or its content as bytes, as float
    ``[H, W]`` in [0, 1].

    Colours become luma (ITU-R 601); a transparent background is filled with the colour that contrasts with
    what is drawn on it (a black digit on a transparent canvas becomes black on white); the EXIF orientation
    of photos is applied; 16-bit pictures keep their full range.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    source = io.BytesIO(path) if isinstance(path, bytes) else Path(path)
    try:
        if _size(source) == 0:
            raise ImageError("empty file")
        with warnings.catch_warnings():  # Pillow's limit (a warning above 89 MP, an error above 179 MP) is far
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # above a digit's: MAX_PIXELS is used
            opened = Image.open(source)
        with opened as image:
            if image.width * image.height > max_pixels:  # known from the header, before anything is decoded
                raise PictureTooLarge(_too_large(f"{image.width}×{image.height} pixels", max_pixels))
            image.seek(0)  # the first frame of an animation
            image = ImageOps.exif_transpose(image)  # also decodes: a truncated file fails here
            transparent = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
            alpha = image.convert("RGBA").getchannel("A") if transparent else None
            grey = _grey_array(image)
    except UnidentifiedImageError:
        raise ImageError("not a picture (no image format recognised)") from None
    except Image.DecompressionBombError:
        raise PictureTooLarge(_too_large("more pixels than Pillow opens", max_pixels)) from None
    except (OSError, SyntaxError, ValueError) as error:  # what Pillow raises
        raise ImageError(f"unreadable picture ({error})") from None
    if alpha is not None:
        opacity = torch.from_numpy(np.asarray(alpha, dtype=np.float32) / 255)
        if opacity.min() < 1:
            drawn = (grey * opacity).sum() / opacity.sum().clamp(min=1e-6)  # mean brightness of what is drawn
            background = 1.0 if drawn < 0.5 else 0.0
            grey = grey * opacity + background * (1 - opacity)
    return grey


def declared_pixels(content: bytes) -> Optional[int]:
    """How many pixels a picture file's header says it has, read without decoding the picture; None when no
    format is recognised (or the header is unreadable)."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(content)) as image:
                return image.width * image.height
    except Image.DecompressionBombError:  # more than Pillow opens at all
        return 2**62
    except Exception:  # noqa: BLE001 (whatever Pillow raises on a foreign header: it names no picture)
        return None


def _too_large(size: str, max_pixels: int) -> str:
    return f"too large: {size}, above the limit of {max_pixels:,} pixels for one digit; crop or shrink it"


def _size(source: Union[Path, io.BytesIO]) -> int:
    return source.getbuffer().nbytes if isinstance(source, io.BytesIO) else source.stat().st_size


def _grey_array(image: Image.Image) -> torch.Tensor:
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):  # 16-bit, 32-bit or floating-point grey
        values = np.asarray(image, dtype=np.float32)
        if not np.isfinite(values).all():
            raise ImageError("pixel values that are not numbers (NaN) or infinite")
        peak = values.max()
        return torch.from_numpy(values / (65535 if peak > 255 else 255 if peak > 1 else 1)).clamp(0, 1)
    return torch.from_numpy(np.asarray(image.convert("L"), dtype=np.float32) / 255)


def to_mnist(grey: torch.Tensor) -> torch.Tensor:
    """A greyscale picture float ``[H, W]`` in [0, 1] of one digit -> uint8 ``[28, 28]`` laid out like MNIST.

    1. Polarity: the median pixel is background (a digit covers far less than half of its picture); when it
       is brighter than the middle of the picture's range, the digit is dark on light and is inverted.
    2. Contrast: the local background level (see `_background`; uneven lighting allowed) becomes 0 and the
       brightest ink 1; what stays below `INK` is noise and becomes 0.
    3. The bounding box of the strokes (pixels above `STROKE`, with their faint edges) is scaled, antialiased,
       so that its longer side is 20 pixels, and stretched again so that its brightest pixel is white.
    4. It is pasted into 28×28 so that its centre of mass is at MNIST's (14, 14), as far as the frame allows.
    """
    from torchvision.transforms.v2.functional import resize

    if grey.ndim != 2 or grey.numel() == 0:
        raise ImageError(f"expected a non-empty 2-D picture, got shape {tuple(grey.shape)}")
    if min(grey.shape) < MIN_SIDE:
        raise ImageError(f"too small to hold a digit: {grey.shape[1]}×{grey.shape[0]} pixels (at least "
                         f"{MIN_SIDE} on each side)")
    grey = grey.float()
    if grey.median() > (grey.min() + grey.max()) / 2:
        grey = 1 - grey
    ink = grey - _background(grey)
    contrast = ink.max()
    if contrast < MIN_CONTRAST:
        raise ImageError("no digit found: the picture is blank (one uniform colour)")
    ink = (ink / contrast).clamp(0, 1)
    ink[ink < INK] = 0
    top, bottom, left, right = _bounding_box(ink > STROKE)
    margin = max(1, round(EDGE * max(bottom - top, right - left)))  # room for the strokes' faint edges
    ink = ink[max(top - margin, 0) : bottom + margin, max(left - margin, 0) : right + margin]
    top, bottom, left, right = _bounding_box(ink > FAINT)
    ink = ink[top:bottom, left:right]

    height, width = ink.shape
    scale = BOX / max(height, width)
    size = [max(1, round(height * scale)), max(1, round(width * scale))]
    digit = resize(ink[None], size, antialias=True)[0].clamp(min=0)
    digit /= digit.max()  # downscaling thins strokes out; MNIST's brightest pixel is always (nearly) white

    mass = digit.sum()
    centre_row = (digit.sum(dim=1) * torch.arange(size[0])).sum() / mass
    centre_col = (digit.sum(dim=0) * torch.arange(size[1])).sum() / mass
    top = min(max(round(CENTRE - centre_row.item()), 0), SIZE - size[0])
    left = min(max(round(CENTRE - centre_col.item()), 0), SIZE - size[1])
    out = torch.zeros(SIZE, SIZE)
    out[top : top + size[0], left : left + size[1]] = digit
    return out.mul(255).round().to(torch.uint8)


def _bounding_box(mask: torch.Tensor) -> tuple[int, int, int, int]:
    """First and past-the-last row and column where `mask` holds (it must hold somewhere)."""
    rows, cols = mask.any(dim=1).nonzero()[:, 0], mask.any(dim=0).nonzero()[:, 0]
    return rows[0].item(), rows[-1].item() + 1, cols[0].item(), cols[-1].item() + 1


def _background(grey: torch.Tensor) -> torch.Tensor:
    """The background level of a light-on-dark picture at each pixel, even under uneven lighting.

    A grey-level opening (erosion then dilation) with a window of half the picture's shorter side wipes out
    strokes, which are far narrower, and keeps the slowly varying background; it runs on a copy at most
    `SIZE` pixels on its shorter side, which is all a smooth background needs, and is scaled back up.
    """
    from torchvision.transforms.v2.functional import resize

    height, width = grey.shape
    scale = min(1.0, SIZE / min(height, width))
    small = resize(grey[None, None], [max(1, round(height * scale)), max(1, round(width * scale))], antialias=True)
    window = min(small.shape[-2:]) // 4 * 2 + 1  # odd, about half the shorter side
    eroded = -F.max_pool2d(-small, window, stride=1, padding=window // 2)
    opened = F.max_pool2d(eroded, window, stride=1, padding=window // 2)
    return resize(opened, [height, width])[0, 0]
