"""Callbacks are not called in a batch where they have nothing to do."""

from __future__ import annotations

from collections.abc import Iterable

from lightning.pytorch import Callback

# The hooks Lightning calls at every batch or optimizer step.
PER_BATCH_HOOKS = (
    "on_train_batch_start", "on_train_batch_end", "on_before_backward", "on_after_backward",
    "on_before_optimizer_step", "on_before_zero_grad",
    "on_validation_batch_start", "on_validation_batch_end", "on_test_batch_start", "on_test_batch_end",
    "on_predict_batch_start", "on_predict_batch_end",
)


def skip_idle_batch_hooks(callbacks: Iterable[Callback]) -> None:
    """Set each per-batch hook that a callback inherits unchanged from `Callback` (a no-op) to None.

    Lightning calls every hook of every callback, five times per training step, each call with a profiler
    context and a formatted action name: with ten callbacks, a sizeable share of a small model's step
    (docs/performance.md). Lightning skips a hook that is not callable (`_call_callback_hooks`
    checks `callable(fn)`), so a no-op set to None is simply not called; behaviour is unchanged.
    """
    for callback in callbacks:
        for hook in PER_BATCH_HOOKS:
            if getattr(type(callback), hook, None) is getattr(Callback, hook):
                setattr(callback, hook, None)
