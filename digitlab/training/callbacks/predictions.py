"""`PredictionWriter`: the table of predictions that `digitlab predict` prints, and optionally its CSV file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import torch
import torch.distributed as dist
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter

from digitlab.errors import PredictionsNotWritten, UserError
from digitlab.utils.atomic import LinkAtTarget, atomic_write_text
from digitlab.utils.destination import destination_problem, write_failure
from digitlab.utils.tables import aligned_lines, csv_text

MNIST_ROWS = 10  # rows printed for the MNIST test set when `max_rows` is not given
CSV_FILE_LINE_END = "\r\n"  # a CSV file's, as RFC 4180 and Python's csv module write them


class PredictionWriter(BasePredictionWriter):
    """Print the predictions as a table, and optionally write them all to a CSV file (`digitlab predict`).

    The `digitlab predict` command always has one, configured as ``predictions`` (``--predictions.csv FILE``).
    Your own pictures (``--data.predict_images``): one row per file with its predicted digit and that digit's
    probability (columns ``file,predicted,probability``). The MNIST test set: the accuracy against its labels
    and the first rows (columns ``index,target,predicted,probability``). Under DDP the rows of every process
    are gathered and printed once, in the data set's order.

    Args:
        csv: Also write every row to this new CSV file; its folder is created if needed. An existing file or
            folder of that name, or a place that cannot be written, is refused before anything is predicted.
            If the file still cannot be written at the end (a full disk), every row is printed instead.
        max_rows: Rows to print (the CSV file gets them all). Default: every picture of your own, the first
            10 images of the MNIST test set.
    """

    def __init__(self, csv: Optional[str] = None, max_rows: Optional[int] = None) -> None:
        super().__init__(write_interval="batch")
        self.csv = Path(csv) if csv is not None else None
        if self.csv is not None:
            check_destination(self.csv)
        if max_rows is not None and max_rows < 0:
            raise UserError(f"predictions.max_rows={max_rows} is not valid: expected 0 or more.")
        self.max_rows = max_rows
        self.rows: list[tuple[int, int, dict[str, Any]]] = []  # (dataloader, index in its data set, row)

    def on_predict_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.rows = []

    def write_on_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        prediction: dict[str, torch.Tensor],
        batch_indices: Optional[list[int]],
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        names = getattr(_dataloader(trainer, dataloader_idx).dataset, "names", None)
        columns = (prediction[key].tolist() for key in ("predicted", "probability", "target"))
        for index, predicted, probability, target in zip(batch_indices, *columns):
            source = {"file": names[index]} if names is not None else {"index": index, "target": target}
            row = {**source, "predicted": predicted, "probability": f"{probability:.4f}"}
            self.rows.append((dataloader_idx, index, row))

    def on_predict_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        rows = [row for *_, row in sorted(_gather(self.rows, trainer.world_size), key=lambda item: item[:2])]
        if not trainer.is_global_zero or not rows:
            return
        own_pictures = "file" in rows[0]
        shown = self.max_rows if self.max_rows is not None else (len(rows) if own_pictures else MNIST_ROWS)
        if self.csv is not None:
            try:
                write_csv(self.csv, rows)
            except PredictionsNotWritten:
                # Every row, since the file that should have held them is not there: nothing is lost.
                pl_module.print("\n".join(self._summary(rows, len(rows))))
                raise
        lines = self._summary(rows, shown) + ([f"Predictions written to {self.csv}"] if self.csv is not None else [])
        pl_module.print("\n".join(lines))  # through the progress bar, if any, so that the two do not mix

    def _summary(self, rows: list[dict[str, Any]], shown: int) -> list[str]:
        """The first `shown` rows as a table, how many more there are, and the accuracy on MNIST's test set."""
        lines = format_table(rows[:shown]) if shown > 0 else []
        if len(rows) > shown:
            hint = f" (all of them in {self.csv})" if self.csv else " (`--predictions.csv FILE` writes them all)"
            lines.append(f"... {len(rows) - shown} more rows{hint}")
        if "file" not in rows[0]:
            correct = sum(row["predicted"] == row["target"] for row in rows)
            lines.append(f"Accuracy against the labels: {correct / len(rows):.4f} ({correct} of {len(rows)} images)")
        return lines


def format_table(rows: list[dict[str, Any]]) -> list[str]:
    """Rows of equal keys as lines of aligned columns: file names left-aligned, numbers right-aligned."""
    if not rows:
        return []
    header = list(rows[0])
    cells = [[str(row[key]) for key in header] for row in rows]
    return aligned_lines(header, cells, right=[key != "file" for key in header])


def check_destination(path: Path) -> None:
    """Refuse, before anything is predicted, a CSV file that could not be written at the end."""
    problem = destination_problem(path, overwrite=False)
    if problem is not None:
        raise UserError(f"predictions.csv={path} {problem}. Choose another file (`--predictions.csv "
                        "predictions_2.csv`).")


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write `rows` to a new file at `path`, never replacing one (not even one that appeared during the run).

    A file that cannot be completed (a full disk, a folder whose permissions changed) is not left half written.
    """
    try:
        table = csv_text(list(rows[0]), [list(row.values()) for row in rows], line_end=CSV_FILE_LINE_END)
        atomic_write_text(path, table, overwrite=False)
    except OSError as error:
        if isinstance(error, LinkAtTarget):
            why = "a symbolic link of that name appeared during the run, and digitlab never writes through one"
        elif isinstance(error, FileExistsError) and os.path.lexists(path):
            why = "a file of that name appeared during the run, and digitlab never overwrites a file"
        else:
            why = write_failure(error)
        raise PredictionsNotWritten(
            f"predictions.csv={path} could not be written: {why}. Every prediction is printed instead; to get "
            "the file, run again with `--predictions.csv` in a place with room and write permission."
        ) from None


def _dataloader(trainer: Trainer, dataloader_idx: int) -> Any:
    loaders = trainer.predict_dataloaders
    return loaders[dataloader_idx] if isinstance(loaders, (list, tuple)) else loaders


def _gather(rows: list, world_size: int) -> list:
    """Every process's rows, on every process (Lightning's predict sampler gives each image to one process)."""
    if world_size == 1 or not (dist.is_available() and dist.is_initialized()):
        return list(rows)
    gathered: list[Optional[list]] = [None] * world_size
    dist.all_gather_object(gathered, rows)
    return [row for part in gathered for row in part or []]
