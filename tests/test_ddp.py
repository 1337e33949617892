"""Lightning DDP on 2 and 3 CPU processes (gloo): synchronised weights, exact once-per-image evaluation,
and a centroid equal to the single-process one. Each run is a real multi-process launch (Lightning's own)."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import write_mnist_like

pytestmark = pytest.mark.slow  # every test launches DDP ranks: processes of their own

WORKER = Path(__file__).with_name("ddp_worker.py")


def run_worker(tmp_path: Path, data: Path, devices: int, *args: str, accelerator: str = "cpu") -> list[dict]:
    """What each rank ended with; one CPU device runs in this process (a new one would add nothing)."""
    out = tmp_path / f"out-{accelerator}-{devices}-{'-'.join(args)}"
    out.mkdir()
    options = ["--devices", str(devices), "--accelerator", accelerator, "--data", str(data), "--out", str(out), *args]
    if devices == 1 and accelerator == "cpu":
        import ddp_worker

        return [ddp_worker.run(ddp_worker.parse(options))[1]]
    command = [sys.executable, str(WORKER), *options]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(devices)]


@pytest.fixture(scope="module")
def uneven_data(tmp_path_factory) -> Path:
    # 199 training and 53 test images: multiples of neither 2 nor 3, so samplers would have to pad.
    return write_mnist_like(tmp_path_factory.mktemp("uneven"), train=199, test=53)


def test_mlp_weights_are_identical_on_every_rank_after_training(tmp_path, uneven_data):
    ranks = run_worker(tmp_path, uneven_data, 2, "--model", "mlp", "--fit", "--max_steps", "5")
    initial = run_worker(tmp_path, uneven_data, 1, "--model", "mlp", "--max_steps", "0")[0]["state"]
    for name, weight in ranks[0]["state"].items():
        assert torch.equal(weight, ranks[1]["state"][name]), name
        assert not torch.equal(weight, initial[name]), f"{name} did not train"


def test_bncnn_weights_and_batch_norm_statistics_agree_on_every_rank(tmp_path, uneven_data):
    """Plain batch norm under DDP: each process normalises its own batch, DDP broadcasts rank 0's running
    statistics before a forward pass, so evaluation uses the same statistics everywhere."""
    ranks = run_worker(tmp_path, uneven_data, 2, "--model", "bncnn", "--fit", "--max_steps", "5")
    for name, value in ranks[0]["state"].items():
        assert torch.equal(value, ranks[1]["state"][name]), name
    assert int(ranks[0]["state"]["features.2.num_batches_tracked"]) == 5
    for rank in ranks:
        assert rank["metrics"]["test/images"] == 53
        assert rank["metrics"]["test/acc"] == ranks[0]["metrics"]["test/acc"]


@pytest.mark.parametrize("devices, eval_batch_size", [(2, 16), (3, 1000)])  # several padded batches, or one
def test_centroid_and_evaluation_count_every_image_exactly_once(tmp_path, uneven_data, devices, eval_batch_size):
    args = ("--model", "centroid", "--fit", "--val_split", "41", "--eval_batch_size", str(eval_batch_size))
    single = run_worker(tmp_path, uneven_data, 1, *args)[0]
    ranks = run_worker(tmp_path, uneven_data, devices, *args)
    for rank in ranks:
        assert torch.equal(rank["state"]["means"], single["state"]["means"])  # exactly, not approximately
        assert rank["state"]["counts"].sum() == 199 - 41
        assert rank["metrics"]["val/images"] == 41
        assert rank["metrics"]["test/images"] == 53
        assert rank["metrics"]["test/acc"] == single["metrics"]["test/acc"]
        assert rank["metrics"]["test/loss"] == pytest.approx(single["metrics"]["test/loss"], rel=1e-6)


def test_lenet5_metrics_are_global_not_per_rank(tmp_path, uneven_data):
    single = run_worker(tmp_path, uneven_data, 1, "--model", "lenet5")[0]
    ranks = run_worker(tmp_path, uneven_data, 2, "--model", "lenet5")
    for rank in ranks:
        assert rank["metrics"]["test/images"] == 53
        assert rank["metrics"]["test/acc"] == single["metrics"]["test/acc"]
        assert rank["metrics"]["test/loss"] == pytest.approx(single["metrics"]["test/loss"], rel=1e-5)


# Launches as a user makes them (torchrun on one node and on two, SLURM's srun on two nodes, the templates of
# examples/cluster/) are tested in tests/test_two_nodes.py and tests/test_restarts.py.
