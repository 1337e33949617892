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
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import write_mnist_like
from waiting import running, wait_for

pytestmark = pytest.mark.slow  # every test launches DDP ranks in processes of their own

# 1,900 training images: 30 batches of 32 per rank and epoch, a last.ckpt every 7 steps.
FIT = ["fit", "--model", "mlp", "--data.verify", "false", "--data.download", "false", "--data.val_split", "100",
       "--data.batch_size", "32", "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
       "--trainer.accelerator", "cpu", "--trainer.strategy", "ddp", "--trainer.max_epochs", "4",
       "--seed_everything", "1", "--pictures", "false", "--last_checkpoint_every_n_steps", "7"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_mnist_like(tmp_path_factory.mktemp("data"), train=2000, test=100)


def environment(**more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "TORCHELASTIC_", "DIGITLAB_DATA"))}
    return {**env, "DIGITLAB_DISABLE_PLUGINS": "1", **more}


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]


def assert_same_weights(ended: dict, expected: dict) -> None:
    assert ended.keys() == expected.keys()
    for name, value in expected.items():
        assert torch.equal(ended[name], value), f"{name}: largest difference {(ended[name] - value).abs().max()}"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data) -> dict[str, torch.Tensor]:
    cwd = tmp_path_factory.mktemp("uninterrupted")
    result = subprocess.run([*TORCHRUN, "-m", "digitlab.cli", *FIT, "--trainer.devices", "2", "--data.data_dir",
                             str(data)], cwd=cwd, env=environment(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return final_weights(cwd / "lightning_logs" / "version_0")


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def local_rank_of(pid: int) -> int:
    variables = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return int(next(v for v in variables if v.startswith(b"LOCAL_RANK=")).split(b"=")[1])


def test_an_elastic_restart_after_a_killed_rank_resumes_in_its_run_folder(tmp_path, data, uninterrupted):
    command = [*TORCHRUN, "--max-restarts", "1", "-m", "digitlab.cli", *FIT, "--trainer.devices", "2",
               "--data.data_dir", str(data)]
    agent = subprocess.Popen(command, cwd=tmp_path, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    run = tmp_path / "lightning_logs" / "version_0"
    wait_for(lambda: (run / "checkpoints" / "last.ckpt").is_file(), 300, "the first mid-epoch last.ckpt",
             running(agent))
    victim = next(pid for pid in children(agent.pid) if local_rank_of(pid) == 1)
    os.kill(victim, signal.SIGKILL)
    stdout, stderr = agent.communicate(timeout=600)
    assert agent.returncode == 0, stderr[-4000:]
    assert "Traceback" not in stderr, stderr[-4000:]
    assert "stopped: by the loss of another process of this run" in stderr  # the survivor, in one paragraph
    assert f"restarted (1 of torchrun's --max-restarts), resumes from {Path('lightning_logs/version_0/checkpoints/last.ckpt')}" in stderr
    assert stdout.count("Test accuracy:") == 1
    assert [p.name for p in (tmp_path / "lightning_logs").iterdir()] == ["version_0"]
    assert (run / "launch").read_text().startswith("torchelastic run ")
    assert_same_weights(final_weights(run), uninterrupted)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def slurm_task(rank: int, data: Path, cwd: Path, port: int, fake_bin: Path, log: Path, **more: str) -> subprocess.Popen:
    """Task `rank` of a 2-node SLURM job (one task per node), as `srun` starts it."""
    env = environment(SLURM_JOB_ID="4321", SLURM_JOB_NAME="train", SLURM_NTASKS="2", SLURM_NTASKS_PER_NODE="1",
                      SLURM_JOB_NUM_NODES="2", SLURM_NNODES="2", SLURM_NODELIST="127.0.0.1", SLURM_PROCID=str(rank),
                      SLURM_LOCALID="0", SLURM_NODEID=str(rank), MASTER_PORT=str(port),
                      PATH=f"{fake_bin}{os.pathsep}{os.environ['PATH']}", FAKE_SCONTROL_LOG=str(log), **more)
    command = [sys.executable, "-m", "digitlab.cli", *FIT, "--trainer.num_nodes", "2", "--trainer.devices", "1",
               "--data.data_dir", str(data)]
    return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def fake_scontrol(tmp_path) -> Path:
    folder = tmp_path / "bin"
    folder.mkdir()
    scontrol = folder / "scontrol"
    scontrol.write_text('#!/usr/bin/env bash\necho "$@" >> "$FAKE_SCONTROL_LOG"\n')
    scontrol.chmod(0o755)
    return folder


def test_a_preempted_slurm_job_is_requeued_and_resumes_in_its_run_folder(tmp_path, data, uninterrupted,
                                                                         fake_scontrol):
    log, cwd = tmp_path / "scontrol.log", tmp_path / "job"
    cwd.mkdir()
    port = free_port()
    tasks = [slurm_task(rank, data, cwd, port, fake_scontrol, log) for rank in range(2)]
    run = cwd / "lightning_logs" / "version_4321"
    wait_for(lambda: (run / "checkpoints" / "last.ckpt").is_file(), 300, "the first mid-epoch last.ckpt",
             running(tasks[0]))
    # A second job on the same run folder (this job requeued by hand while it runs) is refused in one line. The
    # job is paused meanwhile, so that it is still running (and holds its folder) when the second one starts.
    for task in tasks:
        task.send_signal(signal.SIGSTOP)
    second = slurm_task(0, data, cwd, free_port(), fake_scontrol, log, SLURM_RESTART_COUNT="1")
    _, refused = second.communicate(timeout=300)
    for task in tasks:
        task.send_signal(signal.SIGCONT)
    assert second.returncode == 2, refused[-3000:]
    assert "Traceback" not in refused and f"The run folder {Path('lightning_logs/version_4321')} is in use by process " \
        f"{tasks[0].pid}" in refused, refused[-3000:]
    tasks[1].send_signal(signal.SIGUSR1)  # SLURM's notice, to one task only: both stop after the same batch
    outputs = [task.communicate(timeout=300) for task in tasks]
    for task, (_, stderr) in zip(tasks, outputs):
        assert task.returncode == 138, stderr[-3000:]
        assert "Traceback" not in stderr, stderr[-3000:]
    said = outputs[0][1]
    assert "stopped: by SIGUSR1 (SLURM's notice before preemption) at epoch" in said
    assert "Asked SLURM to requeue job 4321 (`scontrol requeue 4321`)" in said
    assert log.read_text() == "requeue 4321\n"  # once, by global rank 0
    assert not list(cwd.glob("hpc_ckpt_*")), "Lightning's own handler saved"
    port = free_port()
    requeued = [slurm_task(rank, data, cwd, port, fake_scontrol, log, SLURM_RESTART_COUNT="1") for rank in range(2)]
    outputs = [task.communicate(timeout=600) for task in requeued]
    for task, (_, stderr) in zip(requeued, outputs):
        assert task.returncode == 0, stderr[-3000:]
        assert "Traceback" not in stderr, stderr[-3000:]
    assert f"requeued SLURM job 4321 resumes from {Path('lightning_logs/version_4321/checkpoints/last.ckpt')}" in \
        outputs[0][1]
    assert [p.name for p in (cwd / "lightning_logs").iterdir()] == ["version_4321"]
    assert_same_weights(final_weights(run), uninterrupted)
