"""Callbacks with nothing to do in a batch are not called there; the others still are, every batch."""

from lightning.pytorch import Callback
from lightning.pytorch.callbacks import ModelSummary

from digitlab.training.callbacks.idle_hooks import PER_BATCH_HOOKS, skip_idle_batch_hooks
from digitlab.data import MNISTDataModule
from digitlab.models.mlp import ScratchMLP
from trainer_utils import quiet_trainer


class CountsBatches(Callback):
    def __init__(self) -> None:
        self.train_batches = self.validation_batches = 0

    def on_train_batch_end(self, *args) -> None:
        self.train_batches += 1

    def on_validation_batch_end(self, *args, **kwargs) -> None:
        self.validation_batches += 1


class CountsBatchesToo(CountsBatches):  # inherits its hooks: they are still its own, not Callback's no-ops
    pass


def test_idle_per_batch_hooks_are_skipped_and_the_others_run_every_batch(synthetic_mnist):
    counting, inherited, summary = CountsBatches(), CountsBatchesToo(), ModelSummary()
    skip_idle_batch_hooks([counting, inherited, summary])
    for hook in PER_BATCH_HOOKS:
        assert getattr(summary, hook) is None, hook
    for callback in (counting, inherited):
        assert callable(callback.on_train_batch_end) and callable(callback.on_validation_batch_end)
        assert callback.on_train_batch_start is None and callback.on_before_backward is None
    assert callable(summary.on_fit_start)  # hooks outside the batch loop are left alone

    data = MNISTDataModule(str(synthetic_mnist), val_split=40, batch_size=16, eval_batch_size=16, verify=False,
                           download=False)
    trainer = quiet_trainer(max_epochs=2, num_sanity_val_steps=0, callbacks=[counting, inherited, summary])
    trainer.fit(ScratchMLP(), datamodule=data)  # Lightning skips a hook that is None
    for callback in (counting, inherited):
        assert callback.train_batches == 2 * 10 and callback.validation_batches == 2 * 3
