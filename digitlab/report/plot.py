"""``digitlab report --plot FILE``: the training runs' validation accuracy against epoch, as a new image file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from digitlab.errors import UserError
from digitlab.report.run import Run
from digitlab.utils.atomic import atomic_write
from digitlab.utils.destination import destination_problem, write_failure


def check_plot_path(path: Path) -> str:
    """The image format of `path` (its extension); a UserError if no new image can be written there."""
    problem = destination_problem(path, overwrite=False)
    if problem is not None:
        raise UserError(f"--plot {path} {problem}. Choose another name.")
    if not path.parent.is_dir():
        raise UserError(f"--plot {path}: the folder {path.parent} does not exist.")
    from matplotlib.backend_bases import FigureCanvasBase

    formats = FigureCanvasBase.get_supported_filetypes()
    extension = path.suffix[1:].lower()
    if extension not in formats:
        what = f"'.{extension}' is not an image format matplotlib writes" if extension else "the name has no extension"
        raise UserError(f"--plot {path}: {what}. End the name with one of "
                        f"{', '.join('.' + name for name in formats)}, such as val_acc.png.")
    return extension


def plot_val_acc(runs: list[Run], path: Path) -> None:
    """`val_acc_figure` of the runs, saved as a new image file."""
    image_format = check_plot_path(path)
    figure = val_acc_figure(runs, path)
    try:
        atomic_write(path, lambda stream: figure.savefig(stream, format=image_format), overwrite=False)
    except FileExistsError:
        raise PlotNotWritten(f"--plot {path} appeared while the report ran (a file or a link); digitlab never "
                             "overwrites a file or writes through a link. Nothing was written.") from None
    except OSError as error:  # a full disk, a folder made read-only meanwhile
        raise PlotNotWritten(f"--plot {path} could not be written: {write_failure(error)}. Nothing was written.") \
            from None
    except RuntimeError as error:  # .pgf without LaTeX
        raise UserError(f"--plot {path} could not be written: {error}") from None


class PlotNotWritten(UserError):
    """The plot was drawn but its file could not be written at the end: nothing was written."""

    exit_code = 1


def val_acc_figure(runs: list[Run], path: Path) -> Any:
    """Validation accuracy against epoch, one line per training run with validation (an evaluation is not one:
    a validate would be a lone dot), as a matplotlib Figure for the image file `path`."""
    curves = [run for run in runs if run.val_acc_curve and run.kind == "fit"]
    if not curves:
        raise UserError(f"No training run logged val/acc, so {path} was not written (runs with "
                        "`data.val_split: 0` have no validation).")
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(8, 5), dpi=120, layout="constrained")
    axes = figure.add_subplot()
    for run in curves:
        epochs, values = zip(*run.val_acc_curve)
        axes.plot(epochs, values, marker="o" if len(epochs) < 30 else None, label=f"{run.version} ({run.model})")
    axes.set(xlabel="epoch (from 0, as in the progress bar and checkpoint names)", ylabel="val/acc",
             title="Validation accuracy")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    return figure
