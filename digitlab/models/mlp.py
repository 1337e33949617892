"""The seed's from-scratch MLP: hand-made parameters, `@` and ReLU, a hand-written gradient-descent step."""

from __future__ import annotations

import math
from typing import Literal, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingLR, LambdaLR, LRScheduler, OneCycleLR

from digitlab.batch import PAD_LABEL, Batch
from digitlab.errors import UserError
from digitlab.models.base import DigitModel
from digitlab.models.registry import register_model


class GradientDescent(torch.optim.Optimizer):
    """The update rule, written out: ``v = momentum * v + (grad + weight_decay * w)``, ``w -= lr * v``.

    With ``momentum = 0`` it is the seed's plain ``w -= lr * grad``. It is an `Optimizer` only so that
    Lightning can checkpoint its state, clip gradients and drive learning-rate schedules.
    """

    def __init__(self, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0) -> None:
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        loss = torch.enable_grad()(closure)() if closure is not None else None
        for group in self.param_groups:
            for weight in group["params"]:
                if weight.grad is None:
                    continue
                step = weight.grad + group["weight_decay"] * weight if group["weight_decay"] else weight.grad
                if group["momentum"]:
                    state = self.state[weight]
                    if "velocity" not in state:
                        state["velocity"] = torch.zeros_like(weight)
                    step = state["velocity"].mul_(group["momentum"]).add_(step)
                weight.sub_(group["lr"] * step)
        return loss


@register_model("mlp")
class ScratchMLP(DigitModel):
    """784-64-64-10 MLP written from scratch, trained by manual optimization with a hand-written update.

    Args:
        hidden_size: Units in each of the two hidden layers (the seed: 64).
        init_std: Standard deviation of the ``torch.randn`` initialisation of weights and biases (the seed:
            0.2). ``None``: He initialisation (``sqrt(2 / fan_in)``) with zero biases.
        lr: Learning rate of the gradient-descent step.
        momentum: Heavy-ball momentum; 0 is plain gradient descent.
        weight_decay: L2 penalty added to the gradient.
        reduction: ``"sum"`` of the per-image losses (the seed) or their ``"mean"``.
        lr_schedule: ``"constant"``, or ``"cosine"`` / ``"onecycle"`` over all training steps.
        gradient_clip_val: Clip the gradients' global norm to this value (``None``: no clipping).
        num_classes: Number of classes.
        compile: Compile the model's call with ``torch.compile`` when a run starts.
    """

    def __init__(
        self,
        hidden_size: int = 64,
        init_std: Optional[float] = None,
        lr: float = 0.05,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        reduction: Literal["sum", "mean"] = "mean",
        lr_schedule: Literal["constant", "cosine", "onecycle"] = "constant",
        gradient_clip_val: Optional[float] = None,
        num_classes: int = 10,
        compile: bool = False,
    ) -> None:
        super().__init__(num_classes=num_classes, compile=compile)
        for name, value in (("lr", lr), ("hidden_size", hidden_size)):
            if value <= 0:
                raise UserError(f"model.{name}={value} is not valid: expected a positive number.")
        self.automatic_optimization = False
        layers = list(zip([28 * 28, hidden_size, hidden_size], [hidden_size, hidden_size, num_classes]))
        self.weights = nn.ParameterList(self._init(torch.randn(i, o), i, init_std) for i, o in layers)
        self.biases = nn.ParameterList(self._init(torch.randn(o), i, init_std, bias=True) for i, o in layers)

    @staticmethod
    def _init(noise: torch.Tensor, fan_in: int, std: Optional[float], bias: bool = False) -> nn.Parameter:
        if std is None:
            return nn.Parameter(torch.zeros_like(noise) if bias else noise * math.sqrt(2 / fan_in))
        return nn.Parameter(noise * std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1)
        for layer, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = h @ w + b
            if layer < len(self.weights) - 1:
                h = h.clamp(min=0)  # ReLU, written as the seed's max(0, .)
        return h

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        # cross_entropy works on log_softmax: the seed's log(softmax(.)) underflows to -inf and turns NaN.
        return F.cross_entropy(logits, targets, reduction=self.hparams.reduction)

    def configure_optimizers(self):
        hp = self.hparams
        optimizer = GradientDescent(self.parameters(), lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self._schedule(optimizer), "interval": "step"}}

    def _schedule(self, optimizer: torch.optim.Optimizer) -> LRScheduler:
        steps = max(1, int(self.trainer.estimated_stepping_batches))
        if self.hparams.lr_schedule == "cosine":
            return CosineAnnealingLR(optimizer, T_max=steps)
        if self.hparams.lr_schedule == "onecycle":
            return OneCycleLR(optimizer, max_lr=self.hparams.lr, total_steps=steps, cycle_momentum=False)
        return LambdaLR(optimizer, lambda step: 1.0)

    def training_step(self, batch: Batch, batch_idx: int) -> None:
        images, targets = batch
        optimizer = self.optimizers()
        optimizer.zero_grad()
        logits = self(images)
        loss = self.training_loss(logits, targets)
        self.manual_backward(loss)  # not loss.backward(): DDP syncs gradients and precision plugins scale here
        if self.hparams.gradient_clip_val is not None:
            self.clip_gradients(optimizer, gradient_clip_val=self.hparams.gradient_clip_val,
                                gradient_clip_algorithm="norm")
        optimizer.step()
        self.lr_schedulers().step()
        if self.hparams.reduction == "sum":
            loss = loss / (targets != PAD_LABEL).sum().clamp(min=1)  # logged per image, like every model
        self.log_train_metrics(loss, logits, targets)
