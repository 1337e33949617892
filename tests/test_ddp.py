"""Lightning DDP on 2 and 3 CPU processes (gloo): synchronised weights, exact once-per-image evaluation,
and a centroid equal to the single-process one. Each run is a real multi-process launch."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import digitlab_here, write_mnist_like

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


CENTROID_ON_SYNTHETIC = ("fit", "--model", "centroid", "--data.verify", "false", "--data.val_split", "0",
                         "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp",
                         "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false")


def single_process_accuracy(tmp_path, data) -> str:
    args = list(CENTROID_ON_SYNTHETIC)
    args[args.index("--trainer.devices") + 1] = "1"
    args[args.index("--trainer.strategy") + 1] = "auto"
    folder = tmp_path / "single"
    folder.mkdir()
    result = digitlab_here(*args, "--data.data_dir", str(data), cwd=folder)  # one process: this one
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.split("Test accuracy:")[1].split()[0]


def test_torchrun_launch_is_used_as_is(tmp_path, uneven_data):
    env = {**os.environ, "DIGITLAB_DISABLE_PLUGINS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "digitlab.cli", *CENTROID_ON_SYNTHETIC, "--data.data_dir", str(uneven_data)]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "MEMBER: 2/2" in result.stderr + result.stdout
    assert result.stdout.count("Test accuracy:") == 1  # printed by rank 0 only
    assert result.stdout.split("Test accuracy:")[1].split()[0] == single_process_accuracy(tmp_path, uneven_data)
    assert [p.name for p in (tmp_path / "lightning_logs").iterdir()] == ["version_0"]


def test_slurm_launch_is_used_as_is(tmp_path, uneven_data):
    """Two processes with the variables `srun --ntasks-per-node=2` sets, as on one SLURM node."""
    processes = []
    for rank in range(2):
        env = {**os.environ, "DIGITLAB_DISABLE_PLUGINS": "1", "SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "2",
               "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank), "SLURM_NODEID": "0",
               "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "digitlab", "SLURM_NODELIST": "127.0.0.1",
               "SLURM_JOB_NUM_NODES": "1"}
        command = [sys.executable, "-m", "digitlab.cli", *CENTROID_ON_SYNTHETIC, "--data.data_dir", str(uneven_data)]
        processes.append(subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True))
    outputs = [process.communicate(timeout=600) for process in processes]
    for process, (stdout, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr[-4000:]
    assert "Test accuracy:" in outputs[0][0] and "Test accuracy:" not in outputs[1][0]
    assert outputs[0][0].split("Test accuracy:")[1].split()[0] == single_process_accuracy(tmp_path, uneven_data)
    assert [p.name for p in (tmp_path / "lightning_logs").iterdir()] == ["version_4242"]
