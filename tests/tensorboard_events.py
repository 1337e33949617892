"""Reading what a run wrote to TensorBoard, the way TensorBoard itself reads it."""

from __future__ import annotations

import io
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def _events(run_dir: Path, kind: str):
    """(tag, its events) for every tag of `kind` ("scalars", "images") in every event file of a run, in order."""
    for event_file in sorted(run_dir.glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(event_file), size_guidance={kind: 0})
        accumulator.Reload()
        read = accumulator.Scalars if kind == "scalars" else accumulator.Images
        for tag in accumulator.Tags()[kind]:
            yield tag, read(tag)


def scalars(run_dir: Path) -> dict[str, list[float]]:
    """Every scalar tag of a run (all event files in its folder) -> its values in order."""
    values: dict[str, list[float]] = {}
    for tag, events in _events(run_dir, "scalars"):
        values.setdefault(tag, []).extend(event.value for event in events)
    return values


def images(run_dir: Path) -> dict[str, list]:
    """Every image tag of a run -> its decoded images (PIL, in order), as TensorBoard would show them."""
    from PIL import Image

    decoded: dict[str, list] = {}
    for tag, events in _events(run_dir, "images"):
        decoded.setdefault(tag, []).extend(Image.open(io.BytesIO(event.encoded_image_string)) for event in events)
    return decoded


def image_steps(run_dir: Path) -> dict[str, list[int]]:
    """Every image tag of a run -> the steps its images were logged at, in order."""
    steps: dict[str, list[int]] = {}
    for tag, events in _events(run_dir, "images"):
        steps.setdefault(tag, []).extend(event.step for event in events)
    return steps


def hparams_sessions(run_dir: Path) -> list:
    """The HParams plugin's records of a run (an experiment, then a session start), as TensorBoard reads them."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    sessions = []
    for events in sorted(run_dir.glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        try:
            contents = accumulator.PluginTagToContent("hparams").values()
        except KeyError:  # this events file holds no hyperparameters
            continue
        sessions += [plugin_data_pb2.HParamsPluginData.FromString(content) for content in contents]
    return sessions


def hparams(run_dir: Path) -> dict[str, object]:
    """The hyperparameters TensorBoard's HParams tab shows for a run: name -> value."""
    [start] = [s.session_start_info for s in hparams_sessions(run_dir) if s.HasField("session_start_info")]
    return {name: value.string_value if value.HasField("string_value") else
            value.bool_value if value.HasField("bool_value") else value.number_value
            for name, value in start.hparams.items()}
