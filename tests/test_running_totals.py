"""The training totals give the same epoch accuracy and per-image loss as torchmetrics over every image."""

import torch
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from digitlab.batch import PAD_LABEL
from digitlab.models.running_totals import RunningTotals


def _batches():
    generator = torch.Generator().manual_seed(0)
    for size, padding in ((7, 0), (5, 2), (3, 3)):  # the last batch is only DDP padding
        logits = torch.randn(size, 10, generator=generator)
        targets = torch.randint(0, 10, (size,), generator=generator)
        targets[size - padding:] = PAD_LABEL
        yield logits, targets


def test_totals_match_torchmetrics_and_skip_padding():
    totals, accuracy, loss = RunningTotals(), MeanMetric(), MeanMetric()
    expected_accuracy = MulticlassAccuracy(10, average="micro", ignore_index=PAD_LABEL)
    per_image_losses = []
    for logits, targets in _batches():
        real = targets != PAD_LABEL
        losses = torch.nn.functional.cross_entropy(logits[real], targets[real], reduction="none")
        batch_loss = losses.mean() if real.any() else torch.tensor(0.0)
        totals.add(batch_loss, logits, targets)
        expected_accuracy.update(logits, targets)
        per_image_losses.append(losses)
    totals.flush(accuracy, loss)

    assert torch.allclose(accuracy.compute(), expected_accuracy.compute())
    assert torch.allclose(loss.compute(), torch.cat(per_image_losses).mean())
    assert totals.sums is None  # flushed: the next epoch starts from zero


def test_a_process_that_saw_only_padding_adds_nothing():
    totals, accuracy, loss = RunningTotals(), MeanMetric(), MeanMetric()
    totals.add(torch.tensor(0.0), torch.randn(4, 10), torch.full((4,), PAD_LABEL))
    totals.flush(accuracy, loss)
    accuracy.update(torch.tensor(0.5), weight=2)  # another process's images
    assert accuracy.compute() == 0.5
