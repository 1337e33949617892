"""Reading what a run wrote to TensorBoard, the way TensorBoard itself reads it."""

from __future__ import annotations

import io
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def scalars(run_dir: Path) -> dict[str, list[float]]:
    """Every scalar tag of a run (all event files in its folder) -> its values in order."""
    values: dict[str, list[float]] = {}
    for event_file in sorted(run_dir.glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(event_file), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            values.setdefault(tag, []).extend(event.value for event in accumulator.Scalars(tag))
    return values


def images(run_dir: Path) -> dict[str, list]:
    """Every image tag of a run -> its decoded images (PIL, in order), as TensorBoard would show them."""
    from PIL import Image

    decoded: dict[str, list] = {}
    for event_file in sorted(run_dir.glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(event_file), size_guidance={"images": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["images"]:
            decoded.setdefault(tag, []).extend(
                Image.open(io.BytesIO(event.encoded_image_string)) for event in accumulator.Images(tag)
            )
    return decoded
