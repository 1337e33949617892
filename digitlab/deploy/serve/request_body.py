"""What `POST /predict` accepts, made into an MNIST digit by `digitlab predict`'s own preparation, or refused
with a status and a one-line reason.

A body is JSON when its Content-Type says so or it starts with ``{``: ``{"image": [[...], ...]}``, 28 rows of 28
numbers in [0, 1] (a greyscale picture; either polarity); anything else is the bytes of a picture file (PNG,
JPEG, or another format Pillow reads). Both go through `digitlab.data.own_images`, like `--data.predict_images`.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import torch

from digitlab.data.own_images import MAX_PIXELS, SIZE, ImageError, PictureTooLarge, prepare_picture, to_mnist

MAX_BODY_BYTES = 8 * 2**20  # a phone photo fits; a drawing from the page is a few kB
MAX_JSON_BYTES = 2**20  # a 28×28 array with every number at full precision is a small part of this
MAX_JSON_DEPTH = 8  # the expected shape needs 3; Python's parser recurses once per level, and runs out of stack
JSON_SHAPE = f'JSON {{"image": [[{SIZE} numbers], ... {SIZE} rows]}} with numbers in [0, 1]'


class BadRequest(Exception):
    """A request that cannot be answered; `status` is its HTTP status, the message its one-line reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def digit_from_body(body: bytes, content_type: str = "", max_pixels: int = MAX_PIXELS) -> torch.Tensor:
    """The request body as an MNIST digit, uint8 ``[28, 28]``; `BadRequest` when it holds none."""
    if not body:
        raise BadRequest(400, f"empty body: send the bytes of a PNG or JPEG picture, or {JSON_SHAPE}")
    try:
        if is_json(body, content_type):
            return to_mnist(_json_picture(body))
        return prepare_picture(body, max_pixels)
    except PictureTooLarge as error:
        raise BadRequest(413, f"picture {error} (`digitlab serve --max_pixels`)") from None
    except ImageError as error:
        raise BadRequest(400, str(error)) from None


def is_json(body: bytes, content_type: str) -> bool:
    """Whether the body is read as JSON (see the module)."""
    return "json" in content_type.lower() or body.lstrip()[:1] == b"{"


def _json_picture(body: bytes) -> torch.Tensor:
    if len(body) > MAX_JSON_BYTES:
        raise BadRequest(413, f"JSON body too large: more than {MAX_JSON_BYTES:,} bytes; expected {JSON_SHAPE}")
    if _nesting(body) > MAX_JSON_DEPTH:
        raise BadRequest(400, f"JSON nested more than {MAX_JSON_DEPTH} levels deep; expected {JSON_SHAPE}")
    try:
        data = json.loads(body, parse_constant=_refuse_constant, parse_float=_finite, parse_int=_finite)
    except ValueError as error:  # also UnicodeDecodeError
        raise BadRequest(400, f"not valid JSON ({error}); expected {JSON_SHAPE}") from None
    image = data.get("image") if isinstance(data, dict) else None
    if not (isinstance(image, list) and len(image) == SIZE
            and all(isinstance(row, list) and len(row) == SIZE for row in image)
            and all(type(value) in (int, float) for row in image for value in row)):
        raise BadRequest(400, f"wrong JSON shape: expected {JSON_SHAPE}")
    grey = torch.tensor(image, dtype=torch.float32)
    if not bool(((grey >= 0) & (grey <= 1)).all()):
        raise BadRequest(400, f"image values out of range: expected numbers in [0, 1] (0 black, 1 white), got "
                              f"{grey.min().item():g} to {grey.max().item():g}")
    return grey


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number")


def _finite(text: str) -> float:
    """A JSON number as a float; a ValueError for one beyond float's range (1e400), which would become infinite,
    and for an integer too long to convert."""
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text[:20]}{'...' if len(text) > 20 else ''} is not a finite number")
    return number


_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')


def _nesting(body: bytes) -> int:
    """How deep the body's arrays and objects nest, counted without parsing (brackets inside strings excluded)."""
    codes = np.frombuffer(_STRING.sub(b"", body), dtype=np.uint8)
    steps = np.isin(codes, (ord("["), ord("{"))).astype(np.int32) - np.isin(codes, (ord("]"), ord("}")))
    return int(np.cumsum(steps).max(initial=0))
