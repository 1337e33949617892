"""A DDP run that loses a process or is preempted carries on by itself, in the run folder it started, and ends
with the weights of an uninterrupted run (bit-identical on CPU):

- an elastic restart: `torchrun --max-restarts 1`, one rank SIGKILLed halfway through an epoch; TorchElastic
  restarts both ranks, which resume from the newest `last.ckpt` (written every few steps);
- a SLURM requeue: SLURM's notice before preemption (SIGUSR1) reaches one of two tasks; both stop after the same
  batch, save, and rank 0 asks `scontrol` (a fake on PATH) to requeue the job; the requeued job (same id,
  SLURM_RESTART_COUNT=1) resumes without `--ckpt_path`. A second job on the same run folder is refused meanwhile.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from cluster_jobs import (children, job_environment, run_job, start_job, start_torchrun_node, stop_job,
                          variable)
from conftest import REPO, write_mnist_like
from ports import free_port
from waiting import running, wait_for

pytestmark = pytest.mark.slow  # every test launches DDP ranks in processes of their own

SBATCH, TORCHRUN_SCRIPT = REPO / "examples" / "cluster" / "sbatch.sh", REPO / "examples" / "cluster" / "torchrun.sh"
# 1,900 training images: 30 batches of 32 per process and epoch (2 processes), a last.ckpt every 7 steps.
CONFIG = {"seed_everything": 1, "model": {"class_path": "mlp"}, "pictures": False,
          "last_checkpoint_every_n_steps": 7,
          "data": {"verify": False, "download": False, "val_split": 100, "batch_size": 32},
          "trainer": {"max_epochs": 3, "enable_progress_bar": False, "enable_model_summary": False}}
LAST = Path("lightning_logs") / "version_{}" / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_mnist_like(tmp_path_factory.mktemp("data"), train=2000, test=100)


@pytest.fixture(scope="module")
def config(tmp_path_factory, data) -> Path:
    path = tmp_path_factory.mktemp("config") / "run.yaml"
    path.write_text(yaml.safe_dump({**CONFIG, "data": {**CONFIG["data"], "data_dir": str(data)}}))
    return path


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]


def assert_same_weights(ended: dict, expected: dict) -> None:
    assert ended.keys() == expected.keys()
    for name, value in expected.items():
        assert torch.equal(ended[name], value), f"{name}: largest difference {(ended[name] - value).abs().max()}"


def torchrun_node(cwd: Path, config: Path, max_restarts: int) -> subprocess.Popen:
    """examples/cluster/torchrun.sh on one machine with two CPU processes."""
    return start_torchrun_node(TORCHRUN_SCRIPT, cwd=cwd, node_rank=0, port=free_port(), output=cwd / "torchrun.out",
                               env={"NNODES": "1", "NPROC_PER_NODE": "2", "MAX_RESTARTS": str(max_restarts),
                                    "ACCELERATOR": "cpu", "CONFIG": str(config)})


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, config) -> dict[str, torch.Tensor]:
    cwd = tmp_path_factory.mktemp("uninterrupted")
    node = torchrun_node(cwd, config, 0)
    try:
        assert node.wait(timeout=600) == 0, (cwd / "torchrun.out").read_text()[-4000:]
    finally:
        stop_job(node)
    return final_weights(cwd / "lightning_logs" / "version_0")


def test_an_elastic_restart_after_a_killed_rank_resumes_in_its_run_folder(tmp_path, config, uninterrupted):
    node = torchrun_node(tmp_path, config, 1)  # torchrun.sh execs torchrun: the workers are its children
    try:
        run = tmp_path / "lightning_logs" / "version_0"
        wait_for(lambda: (run / "checkpoints" / "last.ckpt").is_file(), 300, "the first mid-epoch last.ckpt",
                 running(node))
        victim = next(pid for pid in children(node.pid) if variable(pid, "LOCAL_RANK") == "1")
        os.kill(victim, signal.SIGKILL)
        code = node.wait(timeout=600)
    finally:
        stop_job(node)
    said = (tmp_path / "torchrun.out").read_text()
    assert code == 0, said[-4000:]
    assert "Traceback" not in said, said[-4000:]
    # The survivor, in one paragraph: it either hears its peer's loss first, or torchrun's SIGTERM to it.
    assert re.search(r"stopped: by (the loss of another process of this run|SIGTERM) .*torchrun restarts the run, "
                     r"which resumes from it by itself", said), said[-4000:]
    assert f"restarted (1 of torchrun's --max-restarts), resumes from {str(LAST).format(0)}" in said
    assert said.count("Test accuracy:") == 1
    assert [p.name for p in (tmp_path / "lightning_logs").iterdir()] == ["version_0"]
    assert (run / "launch").read_text().startswith("torchelastic run at 127.0.0.1:")
    assert_same_weights(final_weights(run), uninterrupted)


def direct_task(rank: int, config: Path, cwd: Path, **more: str) -> subprocess.Popen:
    """Task `rank` of a 2-node SLURM job (one task per node) as `srun` would start it, without srun."""
    env = job_environment(4321, nodes=2, tasks_per_node=1, env={
        "SLURM_PROCID": str(rank), "SLURM_LOCALID": "0", "SLURM_NODEID": str(rank), "MASTER_PORT": str(free_port()),
        **more})
    command = [sys.executable, "-m", "digitlab.cli", "fit", "--config", str(config), "--trainer.accelerator", "cpu",
               "--trainer.strategy", "ddp", "--trainer.num_nodes", "2", "--trainer.devices", "1"]
    return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_preempted_slurm_job_is_requeued_and_resumes_in_its_run_folder(tmp_path, config, uninterrupted):
    log = tmp_path / "scontrol.log"
    # One thread per task, as torchrun gives each of its processes: another count sums in another order.
    settings = {"ACCELERATOR": "cpu", "CONFIG": str(config), "DIGITLAB": str(Path(sys.executable).with_name("digitlab")),
                "FAKE_SCONTROL_LOG": str(log), "OMP_NUM_THREADS": "1"}
    job = start_job(SBATCH, cwd=tmp_path, job_id=4321, nodes=2, tasks_per_node=1, env=settings)
    output = tmp_path / "slurm-4321.out"
    run = tmp_path / "lightning_logs" / "version_4321"
    try:
        wait_for(lambda: (run / "checkpoints" / "last.ckpt").is_file(), 300, "the first mid-epoch last.ckpt",
                 running(job))
        tasks = children(job.pid)  # sbatch.sh execs srun, whose children are the tasks
        # A second job on the same run folder (this job requeued by hand while it runs) is refused in one line.
        # The job is paused meanwhile, so that it is still running (and holds its folder) when the other starts.
        for task in tasks:
            os.kill(task, signal.SIGSTOP)
        second = direct_task(0, config, tmp_path, SLURM_RESTART_COUNT="1")
        try:
            _, refused = second.communicate(timeout=300)
        finally:  # not refused, it would wait for its other task for ever
            second.kill()
        for task in tasks:
            os.kill(task, signal.SIGCONT)
        assert second.returncode == 2, refused[-3000:]
        holder = next(task for task in tasks if variable(task, "SLURM_PROCID") == "0")
        assert "Traceback" not in refused, refused[-3000:]
        assert f"The run folder {Path('lightning_logs/version_4321')} is in use by process {holder}" in refused
        # SLURM's notice, to one task only: both stop after the same batch, and global rank 0 asks for the requeue.
        os.kill(next(task for task in tasks if variable(task, "SLURM_PROCID") == "1"), signal.SIGUSR1)
        code = job.wait(timeout=300)
    finally:
        stop_job(job)
    said = output.read_text()
    assert code == 138, said[-4000:]
    assert "Traceback" not in said, said[-4000:]
    assert said.count("stopped: by SIGUSR1 (SLURM's notice before preemption) at epoch") == 2  # every task
    assert "Asked SLURM to requeue job 4321 (`scontrol requeue 4321`)" in said
    assert log.read_text() == "requeue 4321\n"  # once, by global rank 0
    assert not list(tmp_path.glob("hpc_ckpt_*")), "Lightning's own SIGUSR1 handler saved"
    requeued = run_job(SBATCH, cwd=tmp_path, job_id=4321, nodes=2, tasks_per_node=1, restart_count=1, env=settings)
    said = requeued.stdout  # what the requeued job added to slurm-4321.out
    assert requeued.returncode == 0, said[-4000:]
    assert "Traceback" not in said, said[-4000:]
    assert f"requeued SLURM job 4321 resumes from {str(LAST).format(4321)}" in said
    assert said.count("Test accuracy:") == 1
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["lightning_logs"]
    assert [p.name for p in (tmp_path / "lightning_logs").iterdir()] == ["version_4321"]
    assert_same_weights(final_weights(run), uninterrupted)
