"""`digitlab export`: a checkpoint as an ONNX or TorchScript file that runs without digitlab, verified on MNIST.

The file takes what a model's `forward` takes, float images ``[N, 1, 28, 28]`` in [0, 1] (any N), and returns
``[N, 10]`` logits. It is written by `atomic_output` (never overwriting), run on the official 10,000 test
images against the checkpoint, and only then given its name: a failed check leaves no file, and an existing
file (even one created meanwhile by another process) is never replaced.
"""

from __future__ import annotations

import argparse
import os
import warnings
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch

from digitlab.config.option_checks import OptionParser
from digitlab.errors import UserError
from digitlab.deploy.loading import TrainedModel, add_checkpoint_arguments, load_model, model_input
from digitlab.utils.atomic import LinkAtTarget, atomic_output
from digitlab.utils.destination import destination_problem, write_failure

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
SAMPLE_BATCH = 2  # the example batch the export traces; not 1, which exporters may treat as a fixed size
CHECK_BATCH = 512  # the check runs batches of this size and a smaller last one: the batch size is free
# Largest logit difference allowed, relative to the largest logit (at least 1). Each runtime sums a logit's
# hundreds to thousands of float32 products in its own order and with its own fused kernels, which moves the
# result by a few units of float32 rounding (2**-24 ≈ 6e-8) per term at most, far below 1e-4 of the logits'
# scale. 1e-4 leaves a wide margin for that and still catches any real fault (a missing layer, a
# wrong weight or normalisation moves logits by whole units).
RELATIVE_TOLERANCE = 1e-4


class ExportCheckFailed(UserError):
    """The exported file does not compute what the checkpoint computes; it was removed."""

    exit_code = 1


class ExportNotWritten(UserError):
    """The exported file passed its check but could not be given its name (a full disk, a folder made read-only
    meanwhile): nothing was written."""

    exit_code = 1


def export_command(args: list[str]) -> None:
    """`digitlab export --ckpt_path PATH [--format onnx|torchscript] [--output FILE] [--data.data_dir DIR]`."""
    options = export_parser().parse_args(args)

    trained = load_model(options.ckpt_path, options.default_root_dir)
    print(trained.description, file=sys.stderr)
    target = Path(options.output) if options.output else default_output(trained, options.format)
    _refuse_destination(target)
    data_dir = check_data_dir(options.data_dir, trained)
    images, labels = _test_set(data_dir, options.download, options.verify)
    with new_file(target) as temporary:
        write = write_onnx if options.format == "onnx" else write_torchscript
        write(trained.model, temporary)
        run = run_onnx(temporary) if options.format == "onnx" else run_torchscript(temporary)
        report = compare(trained.model, run, images, labels)
        if not report.passed:
            raise ExportCheckFailed(f"The exported {options.format} model does not compute what {trained.path} "
                                    f"computes on the test images of {data_dir}: {report}. Nothing was written. "
                                    "This is a bug in the export of this model: please report it.")
    print(f"Wrote {target} ({options.format}, {trained.name} from {trained.path}).")
    print(f"Checked on the {len(labels):,} test images of {data_dir}: {report}.")


def export_parser() -> OptionParser:
    parser = OptionParser(
        "export",
        description="Write a checkpoint's model as an ONNX or TorchScript file that runs without digitlab, and "
        "check it against the checkpoint on the official 10,000 MNIST test images.",
    )
    add_checkpoint_arguments(parser)
    parser.add_argument("--format", choices=sorted(FORMATS), default="onnx", help="default: onnx")
    parser.add_argument("--output", help="the file to write (never overwritten). Default: in the current folder, "
                        "MODEL-RUN-CHECKPOINT.onnx (or .pt), e.g. lenet5-version_0-last.onnx")
    parser.add_argument("--data.data_dir", "--data_dir", dest="data_dir", help="the folder of the MNIST files for "
                        "the check. Default: $DIGITLAB_DATA_DIR, else the folder the checkpoint was trained "
                        "with (if it exists), else data/")
    parser.add_argument("--data.download", dest="download", type=_boolean, default=True,
                        help="download MNIST when it is not found (default: true)")
    parser.add_argument("--data.verify", dest="verify", type=_boolean, default=True,
                        help="check the test files against the official MNIST's MD5 (default: true)")
    return parser


def default_output(trained: TrainedModel, format: str) -> Path:
    """``MODEL-RUN-CHECKPOINT.EXT`` in the current folder, e.g. ``lenet5-version_0-last.onnx``."""
    run = [trained.path.parent.parent.name] if trained.path.parent.name == "checkpoints" else []
    return Path("-".join([trained.name, *run, trained.path.stem]) + FORMATS[format])


def check_data_dir(data_dir: Optional[str], trained: TrainedModel) -> Path:
    """`--data.data_dir`, else $DIGITLAB_DATA_DIR, else the checkpoint's own data folder if it is here, else data/."""
    from digitlab.data.files import DATA_DIR_ENV, resolve_data_dir

    if data_dir is None and not os.environ.get(DATA_DIR_ENV):
        trained_with = trained.data_hyperparameters.get("data_dir")
        if trained_with and Path(trained_with).is_dir():
            data_dir = trained_with
    return resolve_data_dir(data_dir)


def _test_set(data_dir: Path, download: bool, verify: bool) -> tuple[torch.Tensor, torch.Tensor]:
    from digitlab.data import MNISTDataModule

    data = MNISTDataModule(data_dir=str(data_dir), download=download, verify=verify)
    data.setup("test")
    return model_input(data.test_set.images), data.test_set.labels


def write_onnx(model: torch.nn.Module, path: Path) -> None:
    """One self-contained file (weights inside), input ``images`` ``[batch, 1, 28, 28]``, output ``logits``."""
    sample = torch.rand(SAMPLE_BATCH, 1, 28, 28)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        model.to_onnx(path, sample, dynamo=True, external_data=False, input_names=["images"],
                      output_names=["logits"], dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)


def write_torchscript(model: torch.nn.Module, path: Path) -> None:
    """A traced TorchScript module: `forward` as it ran on a sample batch (digitlab's models branch on nothing
    that depends on the input)."""
    sample = torch.rand(SAMPLE_BATCH, 1, 28, 28)
    with warnings.catch_warnings():  # TorchScript is deprecated in PyTorch; the file still loads everywhere
        warnings.filterwarnings("ignore", message=r".*(to_torchscript|torch\.jit).*deprecated")
        model.to_torchscript(path, method="trace", example_inputs=sample)


Runner = Callable[[torch.Tensor], torch.Tensor]


def run_onnx(path: Path) -> Runner:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda images: torch.from_numpy(session.run(["logits"], {"images": images.numpy()})[0])


def run_torchscript(path: Path) -> Runner:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated")
        module = torch.jit.load(str(path), map_location="cpu")
    return lambda images: module(images)


class Comparison:
    """How the exported model's logits differ from the checkpoint's on the same images."""

    def __init__(self, expected: torch.Tensor, actual: torch.Tensor, labels: torch.Tensor) -> None:
        self.differing = int((expected.argmax(1) != actual.argmax(1)).sum())
        self.largest_difference = (expected - actual).abs().max().item()
        self.allowed = RELATIVE_TOLERANCE * max(1.0, expected.abs().max().item())
        self.accuracy = (actual.argmax(1) == labels).float().mean().item()

    @property
    def passed(self) -> bool:
        return self.differing == 0 and self.largest_difference <= self.allowed  # False for NaN too

    def __str__(self) -> str:
        return (f"{self.differing} differing predictions, largest logit difference {self.largest_difference:.2g} "
                f"(allowed {self.allowed:.2g}), accuracy {self.accuracy:.4f}")


@torch.inference_mode()
def compare(model: torch.nn.Module, run: Runner, images: torch.Tensor, labels: torch.Tensor) -> Comparison:
    batches = images.split(CHECK_BATCH)
    expected = torch.cat([model(batch) for batch in batches])
    actual = torch.cat([run(batch) for batch in batches])
    return Comparison(expected.float(), actual.float(), labels)


def _refuse_destination(target: Path) -> None:
    problem = destination_problem(target, overwrite=False)
    if problem is not None:
        raise UserError(f"--output {target} {problem}. Nothing was written. Choose another name with --output.")


@contextmanager
def new_file(target: Path) -> Iterator[Path]:
    """A temporary file to write and check, named `target` at the end of the block unless that name exists by
    then (another process may have written it)."""
    try:
        with atomic_output(target, overwrite=False) as temporary:
            yield temporary
    except LinkAtTarget:
        raise ExportNotWritten(f"--output {target} became a symbolic link during the export, and digitlab never "
                               "writes through or over a link. Nothing was written.") from None
    except FileExistsError:
        raise ExportNotWritten(f"{target} already exists: it appeared during the export, and digitlab never "
                               "overwrites a file. "
                               "Nothing was written; choose another name with --output.") from None
    except OSError as error:
        raise ExportNotWritten(f"--output {target} could not be written: {write_failure(error)}. Nothing was "
                               "written.") from None


def _boolean(text: str) -> bool:
    if text.lower() in ("true", "yes", "1"):
        return True
    if text.lower() in ("false", "no", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
