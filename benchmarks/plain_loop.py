"""The script a user would write by hand, with nothing but torch: the reference of benchmarks/whole_epochs.py.

It reads the four MNIST files (gzip, no verification), splits 5,000 validation images off the training set,
and for every epoch trains in shuffled mini-batches, then validates in batches of 1,000 under
`torch.no_grad`; then it scores the test set. The recipes are those of the shipped configs:

- lenet5: `configs/lenet5.yaml` (LeNet-5, Glorot-uniform init, Adam 1e-3, batch 128);
- mlp: `configs/mlp.yaml` (784-64-64-10, He init, the hand-written momentum step, one-cycle per step);
- centroid: `configs/centroid.yaml` (the mean image of each class over all 60,000 images, in float64 as
  numpy would, nearest mean by squared distance).

`--import_lightning` also imports `lightning.pytorch`: what any Lightning program pays before it starts.
`--first_step` prints the wall-clock time at the start of the first training step (`FIRST_STEP <t>`) and
exits there.

    python benchmarks/plain_loop.py --model lenet5 --epochs 6 [--data_dir DIR]
"""

from __future__ import annotations

import argparse
import gzip
import math
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_DATA = Path(os.environ.get("DIGITLAB_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared/data/mnist")
SEED = 42
VAL_IMAGES = 5000
EVAL_BATCH = 1000
BATCH = {"lenet5": 128, "mlp": 128}


def read_idx(path: Path) -> torch.Tensor:
    data = gzip.decompress(path.read_bytes())
    rank = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(rank)]
    return torch.frombuffer(bytearray(data[4 + 4 * rank:]), dtype=torch.uint8).reshape(shape)


def load(data_dir: Path) -> tuple[torch.Tensor, ...]:
    """(train images, train labels, test images, test labels): uint8 images, int64 labels."""
    names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    train_x, train_y, test_x, test_y = (read_idx(data_dir / f"{name}.gz") for name in names)
    return train_x, train_y.long(), test_x, test_y.long()


def split(images: torch.Tensor, labels: torch.Tensor):
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(SEED))
    train, val = order[VAL_IMAGES:].sort().values, order[:VAL_IMAGES].sort().values
    return (images[train], labels[train]), (images[val], labels[val])


def as_input(images: torch.Tensor) -> torch.Tensor:
    return images.unsqueeze(1).float().div_(255)


class LeNet5(nn.Sequential):
    def __init__(self) -> None:
        super().__init__(
            nn.Conv2d(1, 6, 3), nn.ReLU(), nn.AvgPool2d(2), nn.Conv2d(6, 16, 3), nn.ReLU(), nn.AvgPool2d(2),
            nn.Flatten(), nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
        )
        for layer in self:
            if isinstance(layer, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)

    def optimizers(self, steps: int):
        return torch.optim.Adam(self.parameters(), lr=1e-3), None


class MLP(nn.Module):
    """784-64-64-10 from scratch: parameters, `@`, ReLU; the update ``v = 0.9 v + g; w -= lr v`` by hand."""

    def __init__(self) -> None:
        super().__init__()
        sizes = [(784, 64), (64, 64), (64, 10)]
        self.weights = nn.ParameterList(torch.randn(i, o) * math.sqrt(2 / i) for i, o in sizes)
        self.biases = nn.ParameterList(torch.zeros(o) for _, o in sizes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1)
        for layer, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = h @ w + b
            if layer < 2:
                h = h.clamp(min=0)
        return h

    def optimizers(self, steps: int):
        optimizer = HandWrittenStep(self.parameters(), lr=0.1, momentum=0.9)
        return optimizer, torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=steps,
                                                              cycle_momentum=False)


class HandWrittenStep(torch.optim.Optimizer):
    """An `Optimizer` only so that OneCycleLR can drive its learning rate."""

    def __init__(self, params, lr: float, momentum: float) -> None:
        super().__init__(params, {"lr": lr, "momentum": momentum})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for weight in group["params"]:
                state = self.state[weight]
                if "velocity" not in state:
                    state["velocity"] = torch.zeros_like(weight)
                weight.sub_(group["lr"] * state["velocity"].mul_(group["momentum"]).add_(weight.grad))


def batches(images: torch.Tensor, labels: torch.Tensor, batch_size: int, epoch: int):
    """Shuffled batches: slices of one permutation, gathered with index_select (as fast as a CPU allows)."""
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(SEED + epoch))
    for index in order.split(batch_size):
        yield images.index_select(0, index), labels.index_select(0, index)


def evaluate(net: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """(accuracy, mean loss), in batches of 1,000 under no_grad."""
    net.eval()
    correct, loss = 0, 0.0
    with torch.no_grad():
        for start in range(0, len(labels), EVAL_BATCH):
            y = labels[start:start + EVAL_BATCH]
            logits = net(as_input(images[start:start + EVAL_BATCH]))
            correct += int((logits.argmax(1) == y).sum())
            loss += float(F.cross_entropy(logits, y, reduction="sum"))
    net.train()
    return correct / len(labels), loss / len(labels)


def build(model: str, data, epochs: int):
    """The network, its optimizer and schedule, and the split, as every variant of the benchmark trains them."""
    torch.manual_seed(SEED)
    train_set, val_set = split(data[0], data[1])
    net = {"lenet5": LeNet5, "mlp": MLP}[model]()
    optimizer, scheduler = net.optimizers(epochs * math.ceil(len(train_set[1]) / BATCH[model]))
    return net, optimizer, scheduler, train_set, val_set


def train(model: str, epochs: int, data, first_step: bool) -> None:
    net, optimizer, scheduler, (train_x, train_y), (val_x, val_y) = build(model, data, epochs)
    for epoch in range(epochs):
        for images, y in batches(train_x, train_y, BATCH[model], epoch):
            if first_step:
                print(f"FIRST_STEP {time.time()}", flush=True)
                os._exit(0)
            loss = F.cross_entropy(net(as_input(images)), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
        accuracy, val_loss = evaluate(net, val_x, val_y)
        print(f"epoch {epoch}: val/acc {accuracy:.4f} val/loss {val_loss:.4f}")
    print(f"Test accuracy: {evaluate(net, data[2], data[3])[0]:.4f}")


def centroid(data) -> None:
    train_x, train_y, test_x, test_y = data
    means = torch.stack([train_x[train_y == k].flatten(1).double().mean(0) / 255 for k in range(10)])
    x = test_x.flatten(1).double() / 255
    distances = (x**2).sum(1, keepdim=True) - 2 * x @ means.T + (means**2).sum(1)
    print(f"Test accuracy: {(distances.argmin(1) == test_y).double().mean().item():.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["lenet5", "mlp", "centroid"], required=True)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--data_dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--import_lightning", action="store_true")
    parser.add_argument("--first_step", action="store_true")
    args = parser.parse_args()
    if args.import_lightning:
        import lightning.pytorch  # noqa: F401
    data = load(args.data_dir)
    if args.model == "centroid":
        centroid(data)
    else:
        train(args.model, args.epochs, data, args.first_step)


if __name__ == "__main__":
    main()
