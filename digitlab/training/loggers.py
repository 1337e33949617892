"""`RunLogger`: Lightning's TensorBoardLogger, with hyperparameters that read right in TensorBoard."""

from __future__ import annotations

from argparse import Namespace
from typing import Any, Optional, Union

from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from digitlab.runs.layout import TENSORBOARD_CLASS_PATHS, writes_run_folder
from digitlab.training.compat import flatten_hparams, sanitize_hparams, summary_file_writer

# The metrics TensorBoard's HParams tab shows for each run: `hp_metric` (best val/acc while fitting, then
# test/acc), and the two it follows.
HPARAMS_METRICS = ("hp_metric", "val/acc_best", "test/acc")
# Model arguments that are not hyperparameters of the model (or are shown as their short form).
NOT_SHOWN = {"optimizer", "lr_scheduler", "compile", "num_classes", "_class_path", "_instantiator"}
DATA_SHOWN = ("batch_size", "seed")  # the data module's settings that change a run's result (and augmentation)


class RunLogger(TensorBoardLogger):
    """TensorBoardLogger for digitlab runs.

    Lightning's logger writes ``hp_metric = -1`` at step 0 every time hyperparameters are logged: once when
    fitting starts and again when the test after fit starts, so TensorBoard draws ``hp_metric`` back to -1
    and the HParams tab may show -1. Here the hyperparameters and the metric names go to TensorBoard once per
    run, with no placeholder value; the model logs the real ``hp_metric`` as it goes. The hyperparameters
    name the model (``model: lenet5``) instead of LightningCLI's internal ``_instantiator``.

    Args:
        model_name: Shown as the ``model`` hyperparameter (the CLI sets the registry name).
        extra_hparams: More hyperparameters to show, e.g. a sweep's name and trial number.
        extra_metrics: More metric names for the HParams tab, e.g. a sweep's ``sweep/pruned``.
        Others: as `lightning.pytorch.loggers.TensorBoardLogger`.
    """

    def __init__(
        self,
        *args: Any,
        model_name: Optional[str] = None,
        model_keys: tuple[str, ...] = (),
        extra_hparams: Optional[dict[str, Any]] = None,
        extra_metrics: tuple[str, ...] = (),
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("default_hp_metric", False)
        super().__init__(*args, **kwargs)
        self.model_name, self.model_keys = model_name, model_keys
        self.extra_hparams = dict(extra_hparams or {})
        self.hparams_metrics = (*HPARAMS_METRICS, *extra_metrics)
        self._hparams_written = False

    @rank_zero_only
    def log_hyperparams(
        self, params: Union[dict[str, Any], Namespace], metrics: Optional[dict[str, Any]] = None, step: Optional[int] = None
    ) -> None:
        params = {k: v for k, v in as_dict(params).items() if k != "_instantiator"}
        if self.model_name:
            params = {"model": self.model_name, **params}
        params.update(self.extra_hparams)
        self.hparams.update(params)  # hparams.yaml
        if metrics is not None:  # a caller's own metrics: Lightning's behaviour
            return super().log_hyperparams(params, metrics, step)
        if self._hparams_written:  # the test after fit: same run, same hyperparameters
            return None
        from torch.utils.tensorboard.summary import hparams

        flat = sanitize_hparams(flatten_hparams(self.shown(params)))
        writer = summary_file_writer(self.experiment)
        for summary in hparams(flat, dict.fromkeys(self.hparams_metrics, 0.0)):  # names only: no value is logged
            writer.add_summary(summary)
        self._hparams_written = True
        return None


    def shown(self, params: dict[str, Any]) -> dict[str, Any]:
        """The few hyperparameters that tell runs apart, for TensorBoard's HParams tab: the model and its own
        arguments, the optimizer and its learning rate, the schedule, the batch size, the epochs, the seed and
        the augmentation (``hparams.yaml`` and ``config.yaml`` keep everything)."""
        shown = {key: params[key] for key in ("model", *self.model_keys) if key in params and key not in NOT_SHOWN}
        for key in ("optimizer", "lr_scheduler"):
            class_path, init_args = _class_and_arguments(params.get(key))
            if class_path:
                shown[key] = class_path.rsplit(".", 1)[-1]
            if key == "optimizer" and "lr" in init_args and "lr" not in shown:
                shown["lr"] = init_args["lr"]
        shown.update({key: params[key] for key in DATA_SHOWN if key in params})
        shown.update({key: value for key, value in params.items() if key.startswith("augment") and value})  # if on
        shown.update({key: params[key] for key in self.extra_hparams if key in params})
        return shown


def _class_and_arguments(value: Any) -> tuple[Optional[str], dict[str, Any]]:
    """A ``{class_path, init_args}`` setting's class path and arguments (a class or callable: its name)."""
    if isinstance(value, dict):
        return value.get("class_path"), dict(value.get("init_args") or {})
    if value is not None and hasattr(value, "__qualname__"):
        return f"{getattr(value, '__module__', '')}.{value.__qualname__}", {}
    return None, {}


def as_dict(params: Union[dict[str, Any], Namespace, None]) -> dict[str, Any]:
    """Hyperparameters as Lightning hands them to a logger (a dict, a Namespace or None), as a dict."""
    if isinstance(params, Namespace):
        return vars(params)
    return {} if params is None else params


def build_loggers(specs: list[dict[str, Any]], folder: Any, model_name: Optional[str],
                  extra_hparams: Optional[dict[str, Any]] = None, extra_metrics: tuple[str, ...] = (),
                  model_keys: tuple[str, ...] = ()) -> list[Any]:
    """Instantiate the loggers (`specs` from `digitlab.runs.layout.logger_specs`), every file logger writing
    into the one run `folder` (a claimed `Path`, or None to leave their folders as configured); TensorBoard
    loggers become `RunLogger`s, with `model_name`, `model_keys`, `extra_hparams` and `extra_metrics`."""
    from lightning.pytorch.cli import instantiate_class

    loggers = []
    for spec in specs:
        class_path, init_args = spec["class_path"], dict(spec.get("init_args") or {})
        if folder is not None and writes_run_folder(spec):
            init_args.update(save_dir=str(folder.parent), name="", version=folder.name)
        if class_path in TENSORBOARD_CLASS_PATHS:
            class_path = f"{RunLogger.__module__}.{RunLogger.__qualname__}"
            init_args.update(model_name=model_name, model_keys=model_keys, extra_hparams=extra_hparams,
                             extra_metrics=extra_metrics)
        loggers.append(instantiate_class((), {"class_path": class_path, "init_args": init_args}))
    return loggers
