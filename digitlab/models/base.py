"""`DigitModel`: what every digit classifier shares — loss, metrics, logging, test and predict steps."""

from __future__ import annotations

import functools
from abc import ABCMeta, abstractmethod
from typing import Any, Callable, Optional, Union

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable, instantiate_class
from torchmetrics import MaxMetric, MeanMetric, SumMetric
from torchmetrics.classification import MulticlassAccuracy

from digitlab.batch import PAD_LABEL, Batch
from digitlab.errors import UserError
from digitlab.models.running_totals import RunningTotals
from digitlab.training.compat import is_compiled


RUN_STATE_KEY = "digitlab_run_state"  # in checkpoints: the best val/acc so far and the epoch's training totals


class DigitModel(LightningModule, metaclass=ABCMeta):
    """Base class of all digit classifiers. Subclasses define layers and `forward`; the rest is here.

    `forward(x)` takes a float batch ``[N, 1, 28, 28]`` with values in [0, 1] and returns ``[N, 10]`` logits.
    Metrics are logged as ``train/loss_step``, ``train/loss_epoch``, ``train/acc``, ``val/loss``, ``val/acc``,
    ``val/acc_best``, ``test/loss``, ``test/acc`` and ``test/images``; ``hp_metric`` follows ``val/acc_best``,
    then ``test/acc``.
    Under DDP a batch may hold padding labelled -100 (`PAD_LABEL`): the loss and the metrics ignore it, so
    every image counts exactly once whatever the number of processes.

    Args:
        optimizer: Builds the optimizer from the parameters, e.g. ``torch.optim.Adam`` or, in YAML,
            ``{class_path: torch.optim.SGD, init_args: {lr: 0.1}}``.
        lr_scheduler: Optional; builds a learning-rate scheduler from the optimizer (stepped every epoch).
        num_classes: Number of classes.
        compile: Compile the model's call with ``torch.compile`` when a run starts. The first batches wait
            for the compiler; on a GPU the later ones run faster. Checkpoints are the same as without it.
    """

    def __init__(
        self,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: Optional[LRSchedulerCallable] = None,
        num_classes: int = 10,
        compile: bool = False,
    ) -> None:
        super().__init__()
        owns_optimizer = type(self).configure_optimizers is DigitModel.configure_optimizers
        self.save_hyperparameters(ignore=None if owns_optimizer else ["optimizer", "lr_scheduler"])
        if owns_optimizer:
            # Callables given in Python become {class_path, init_args}: checkpoints stay weights-only loadable.
            for key in ("optimizer", "lr_scheduler"):
                self.hparams[key] = _as_config(self.hparams.get(key))
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        if owns_optimizer:
            check_optimizer(optimizer)
        self.num_classes = num_classes
        self.example_input_array = torch.zeros(1, 1, 28, 28)  # the model summary shows shapes and FLOPs from it
        # One metric object per stage; torchmetrics syncs their states across processes when computing.
        self.val_acc, self.test_acc = _accuracy(num_classes), _accuracy(num_classes)
        self.train_acc = MeanMetric()  # of batch accuracies weighted by images: fed from _train_totals
        self.train_loss, self.val_loss, self.test_loss = MeanMetric(), MeanMetric(), MeanMetric()
        self._train_totals = RunningTotals()
        self.val_images, self.test_images = SumMetric(), SumMetric()
        self.val_acc_best = MaxMetric()
        self._resumed_best: Optional[torch.Tensor] = None

    @abstractmethod
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, 1, 28, 28]`` float images -> ``[N, num_classes]`` logits."""

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The training objective; mean cross-entropy unless a model says otherwise. Must ignore -100."""
        return F.cross_entropy(logits, targets)

    def training_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """`loss`, except that a batch made only of DDP padding gives zero (a mean over nothing is NaN).

        Every process must still run backward on it, or DDP's gradient all-reduce would wait forever. Only
        DDP runs are padded, so a single process skips the check and its host sync.
        """
        if self._world_size() > 1 and bool((targets == PAD_LABEL).all()):
            return logits.sum() * 0.0
        return self.loss(logits, targets)

    def _world_size(self) -> int:
        try:
            return self.trainer.world_size
        except RuntimeError:  # not attached to a trainer
            return 1

    def configure_model(self) -> None:
        if self.hparams.get("compile") and not is_compiled(self):
            self.compile()  # nn.Module.compile: in place, so the state_dict keys keep their names

    def configure_optimizers(self) -> Any:
        optimizer = _build(self.optimizer, self.parameters())
        if self.lr_scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": _build(self.lr_scheduler, optimizer)}

    # -- steps -------------------------------------------------------------------------------------

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        images, targets = batch
        logits = self(images)
        loss = self.training_loss(logits, targets)
        self.log_train_metrics(loss, logits, targets)
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> dict[str, torch.Tensor]:
        return self._evaluate(batch, "val", self.val_acc, self.val_loss, self.val_images)

    def test_step(self, batch: Batch, batch_idx: int) -> dict[str, torch.Tensor]:
        return self._evaluate(batch, "test", self.test_acc, self.test_loss, self.test_images)

    def predict_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> dict[str, torch.Tensor]:
        images, targets = batch
        probabilities = self(images).softmax(dim=1)
        confidence, predicted = probabilities.max(dim=1)
        return {"predicted": predicted, "probability": confidence, "target": targets}

    # -- logging -----------------------------------------------------------------------------------

    def log_train_metrics(self, loss: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """Log ``train/loss_step``, ``train/loss_epoch`` (per image) and ``train/acc``; models with their own
        training step call this.

        A step only adds to running totals on the device (no metric update, no host sync); `self.log`, which
        costs far more than a small model's step, runs at the logger's interval (`trainer.log_every_n_steps`)
        and once at the end of the epoch.
        """
        loss = loss.detach()
        self._train_totals.add(loss, logits.detach(), targets)
        if (self.global_step + 1) % self.trainer.log_every_n_steps == 0:
            self.log("train/loss_step", loss, on_step=True, on_epoch=False, prog_bar=True)

    @property
    def last_train_loss(self) -> Optional[torch.Tensor]:
        """The latest training step's loss per image (StopOnNonFiniteLoss reads it at the logging interval)."""
        return self._train_totals.last_loss

    def on_train_epoch_end(self) -> None:
        self._train_totals.flush(self.train_acc, self.train_loss)
        self.log("train/loss_epoch", self.train_loss, on_epoch=True, prog_bar=True)
        self.log("train/acc", self.train_acc, on_epoch=True, prog_bar=True)

    def _evaluate(
        self, batch: Batch, stage: str, accuracy: MulticlassAccuracy, loss: MeanMetric, images_seen: SumMetric
    ) -> dict[str, torch.Tensor]:
        """Update and log the stage's metrics; return the batch's ``logits`` and ``targets`` for callbacks
        (`digitlab.training.callbacks` draws confusion matrices and mistakes from them, without a second forward)."""
        images, targets = batch
        logits = self(images)
        real = targets != PAD_LABEL
        accuracy(logits, targets)
        # Per-image losses in a MeanMetric: an exact mean over all processes, however unevenly split.
        loss(F.cross_entropy(logits[real], targets[real], reduction="none"))
        images_seen(real.sum())
        self.log(f"{stage}/loss", loss, on_epoch=True, prog_bar=True)
        self.log(f"{stage}/acc", accuracy, on_epoch=True, prog_bar=True)
        self.log(f"{stage}/images", images_seen, on_epoch=True)
        return {"logits": logits.detach(), "targets": targets}

    def on_train_start(self) -> None:
        # The sanity check's validation must not count as the best epoch.
        self.val_acc_best.reset()
        if self._resumed_best is not None:  # the best of the epochs before an interruption
            self.val_acc_best(self._resumed_best.to(self.device))
            self._resumed_best = None

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Metric states are not part of the state_dict: keep what a resumed run needs to log the same numbers.
        best = self.val_acc_best.max_value
        checkpoint[RUN_STATE_KEY] = {
            "val_acc_best": best.detach().cpu() if bool(torch.isfinite(best)) else None,
            "train_totals": None if self._train_totals.sums is None else self._train_totals.sums.detach().cpu(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get(RUN_STATE_KEY) or {}
        self._resumed_best = state.get("val_acc_best")
        totals = state.get("train_totals")
        self._train_totals.sums = None if totals is None else totals.to(self.device)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        self.val_acc_best(self.val_acc.compute())
        best = self.val_acc_best.compute()  # already global: the accuracies it saw were synced
        self.log("val/acc_best", best, prog_bar=True, sync_dist=True)
        self.log("hp_metric", best, sync_dist=True)

    def on_test_epoch_end(self) -> None:
        self.log("hp_metric", self.test_acc.compute(), sync_dist=True)


def _accuracy(num_classes: int) -> MulticlassAccuracy:
    return MulticlassAccuracy(num_classes, average="micro", ignore_index=PAD_LABEL)


CallableOrConfig = Union[Callable, dict, None]


def _as_config(value: CallableOrConfig) -> CallableOrConfig:
    """``torch.optim.SGD`` or ``partial(SGD, lr=0.1)`` -> ``{"class_path": ..., "init_args": ...}``."""
    if value is None or isinstance(value, dict):
        return value
    func, kwargs = (value.func, dict(value.keywords)) if isinstance(value, functools.partial) else (value, {})
    if not isinstance(func, type):  # a lambda or other builder: not portable, keep it out of the checkpoint
        return None
    return {"class_path": f"{func.__module__}.{func.__qualname__}", "init_args": kwargs}


def check_optimizer(optimizer: CallableOrConfig) -> None:
    """Build the optimizer once on a dummy parameter, so a bad setting fails now, before any run starts."""
    try:
        probe = _build(optimizer, [torch.nn.Parameter(torch.zeros(1))])
    except ValueError as error:  # torch's own checks: "Invalid learning rate: -1.0", ...
        raise UserError(f"model.optimizer is not valid: {error}. Fix its init_args in the config.") from None
    learning_rates = [group["lr"] for group in probe.param_groups if "lr" in group]
    if any(float(lr) <= 0 for lr in learning_rates):
        raise UserError(
            f"model.optimizer has learning rate {learning_rates[0]}: it must be positive. "
            "Fix `lr` in the optimizer's init_args."
        )


def _build(spec: CallableOrConfig, first_argument: Any) -> Any:
    """Call an optimizer or scheduler builder, or instantiate it from its ``{class_path, init_args}`` config."""
    return instantiate_class(first_argument, spec) if isinstance(spec, dict) else spec(first_argument)
