"""What a run shows on the terminal: Lightning's progress bar and model summary, without what says nothing about
the run (the bar's four-character version, the metrics objects listed as layers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Union

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelSummary, TQDMProgressBar
from torchmetrics import Metric


class RunProgressBar(TQDMProgressBar):
    """Lightning's bar, naming the run (its folder, ``version_3``) instead of the last four characters of it."""

    def get_metrics(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Union[int, str, float, dict]]:
        items = dict(super().get_metrics(trainer, pl_module))
        items.pop("v_num", None)
        if trainer.loggers and trainer.log_dir:
            items = {"run": Path(trainer.log_dir).name, **items}
        return items


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
