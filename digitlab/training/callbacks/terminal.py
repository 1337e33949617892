"""What a run shows on the terminal: Lightning's progress bar (or, when the output is not a terminal, one line per
epoch) and model summary, without what says nothing about the run (the bar's four-character version, the metrics
objects listed as layers)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Optional, Union

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelSummary, ProgressBar, TQDMProgressBar
from torchmetrics import Metric


class RunProgressBar(TQDMProgressBar):
    """Lightning's bar, naming the run (its folder, ``version_3``) instead of the last four characters of it."""

    def get_metrics(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Union[int, str, float, dict]]:
        items = dict(super().get_metrics(trainer, pl_module))
        items.pop("v_num", None)
        if trainer.loggers and trainer.log_dir:
            items = {"run": Path(trainer.log_dir).name, **items}
        return items


class EpochLines(ProgressBar):
    """Progress as one line per epoch, for output that is not a terminal (a log file, CI): a redrawn bar would
    be one endless line of carriage returns there. ``epoch 3 · train/loss_epoch 0.0412 · val/acc 0.9871 · 12.3 s``.

    The line of an epoch is printed once the model has logged the epoch's training totals, which it does after
    the callbacks' end of the epoch: at the start of the next epoch, or at the end of training."""

    def __init__(self) -> None:
        super().__init__()
        self._enabled = True
        self._started = 0.0
        self._finished: Optional[tuple[int, float]] = None  # the epoch ended and its seconds, not yet printed

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # A run resumed halfway through an epoch gets no start of that epoch: its line counts from here.
        self._started = time.perf_counter()

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._print_finished(trainer, pl_module)
        self._started = time.perf_counter()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._finished = (trainer.current_epoch, time.perf_counter() - self._started)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._print_finished(trainer, pl_module)

    def _print_finished(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._finished is None or not self._enabled or not trainer.is_global_zero:
            return
        (epoch, seconds), self._finished = self._finished, None
        metrics = {key: value for key, value in self.get_metrics(trainer, pl_module).items()
                   if key != "v_num" and isinstance(value, (int, float))}
        ordered = sorted(metrics.items(), key=lambda item: not item[0].startswith("train/"))  # train, then val
        values = "".join(f" · {key} {value:.4f}" for key, value in ordered)
        print(f"epoch {epoch}{values} · {seconds:.1f} s", flush=True)


def progress_display(refresh_rate: int) -> ProgressBar:
    """Lightning's bar on a terminal, one line per epoch elsewhere."""
    return RunProgressBar(refresh_rate=refresh_rate) if sys.stdout.isatty() else EpochLines()


class LayersSummary(ModelSummary):
    """Lightning's model summary, listing the model's layers only: the torchmetrics objects that compute its
    metrics are modules too, but they hold no parameters and are not part of the network."""

    def __init__(self, max_depth: int = 1, **summarize_kwargs: Any) -> None:
        super().__init__(max_depth, **summarize_kwargs)
        self._metric_types: set[str] = set()

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._metric_types = {type(module).__name__ for module in pl_module.modules() if isinstance(module, Metric)}
        super().on_fit_start(trainer, pl_module)

    def summarize(self, summary_data: list[tuple[str, list[str]]], *args: Any, **kwargs: Any) -> None:
        types = dict(summary_data).get("Type", [])
        keep = [index for index, kind in enumerate(types) if kind not in self._metric_types]
        if len(keep) < len(types):
            summary_data = [(name, [values[index] for index in keep]) for name, values in summary_data]
            summary_data = [(" ", [str(number) for number in range(len(keep))]) if name == " " else (name, values)
                            for name, values in summary_data]
        super().summarize(summary_data, *args, **kwargs)
