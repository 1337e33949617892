"""SLURM's notice before preemption (SIGUSR1): the run stops after its batch, saves last.ckpt in its run folder and
asks `scontrol` to requeue the job; which signal and whether to requeue follow Lightning's SLURMEnvironment."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch
from lightning.fabric.plugins.environments import LightningEnvironment, SLURMEnvironment
from lightning.pytorch import Callback

from cluster_jobs import FAKE_BIN
from conftest import SMALL_RUN, write_mnist_like
from digitlab.errors import StopSignal, Stopped
from digitlab.training.requeue import requeue_job, requeue_signal
from digitlab.training.run import build_run, parse_run
from digitlab.utils import stop_requests

SLURM_JOB = {"SLURM_JOB_ID": "77", "SLURM_NTASKS": "1", "SLURM_JOB_NAME": "train"}


@pytest.fixture
def slurm_job(monkeypatch, tmp_path) -> Path:
    """This process as the one task of SLURM job 77, with the fake `scontrol` on PATH; the file it writes to."""
    for name in list(os.environ):
        if name.startswith(("SLURM_", "TORCHELASTIC_", "FAKE_S")):
            monkeypatch.delenv(name)
    for name, value in SLURM_JOB.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PATH", f"{FAKE_BIN}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SCONTROL_LOG", str(tmp_path / "scontrol.log"))
    return tmp_path / "scontrol.log"


def test_the_requeue_signal_follows_lightnings_slurm_environment(slurm_job, monkeypatch):
    assert requeue_signal([]) == signal.SIGUSR1  # Lightning's default in a SLURM job: auto_requeue on SIGUSR1
    assert requeue_signal([SLURMEnvironment(auto_requeue=False)]) is None
    assert requeue_signal([LightningEnvironment()]) is None  # another cluster environment, chosen by hand
    assert requeue_signal([SLURMEnvironment(requeue_signal=signal.SIGHUP)]) == signal.SIGHUP
    assert signal.SIGHUP in stop_requests.NOTICES and stop_requests.SIGNALS[signal.SIGHUP][1] == 129
    stop_requests.NOTICES.discard(signal.SIGHUP)
    stop_requests.SIGNALS.pop(signal.SIGHUP)
    monkeypatch.setenv("SLURM_JOB_NAME", "bash")  # an interactive allocation: Lightning sees no SLURM job
    assert requeue_signal([]) is None


def test_requeue_job_calls_scontrol_and_says_what_happened(slurm_job, monkeypatch):
    assert "Asked SLURM to requeue job 77 (`scontrol requeue 77`)" in requeue_job()
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "70")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert "job 70_3" in requeue_job()
    assert slurm_job.read_text() == "requeue 77\nrequeue 70_3\n"
    monkeypatch.setenv("FAKE_SCONTROL_EXIT", "1")
    assert "was not requeued: `scontrol requeue 70_3` failed" in requeue_job()
    monkeypatch.setenv("PATH", "/nonexistent")
    assert "`scontrol` is not on PATH" in requeue_job()
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "70; rm -rf /")
    assert "is not a SLURM job id" in requeue_job()


def test_sigusr1_outside_a_run_stops_where_the_program_is():
    with stop_requests.handled():
        with pytest.raises(StopSignal) as stop:
            os.kill(os.getpid(), signal.SIGUSR1)
    assert stop.value.exit_code == 138 and "SLURM's notice before preemption" in stop.value.name


def test_another_process_request_is_adopted_once():
    stop_requests.install()
    try:
        assert stop_requests.requested() is None
        request = stop_requests.adopt(signal.SIGUSR1)
        assert request.signum == signal.SIGUSR1 and request.exit_code == 138
        assert stop_requests.adopt(signal.SIGTERM) is request  # the first one stays
    finally:
        stop_requests.uninstall()


class NoticeAt(Callback):
    """SLURM's notice arrives in the middle of training (after `step` steps)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGUSR1)


def test_a_notice_stops_saves_and_requeues_then_the_requeued_job_resumes(slurm_job, tmp_path, monkeypatch):
    data = write_mnist_like(tmp_path / "data", train=200, test=40)
    args = ["--model", "mlp", "--data.data_dir", str(data), *SMALL_RUN, "--seed_everything", "0",
            "--trainer.default_root_dir", str(tmp_path), "--trainer.max_epochs", "2", "--pictures", "false",
            "--test_after_fit", "false"]
    run = build_run(parse_run("fit", args), callbacks=[NoticeAt(3)])
    with pytest.raises(Stopped) as stopped:
        run.execute()
    last = tmp_path / "lightning_logs" / "version_77" / "checkpoints" / "last.ckpt"
    assert stopped.value.exit_code == 138
    assert f"at epoch 0, step 3; saved {last}" in str(stopped.value)
    assert "Asked SLURM to requeue job 77" in str(stopped.value)
    assert slurm_job.read_text() == "requeue 77\n"
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 3
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    requeued = build_run(parse_run("fit", args))
    assert requeued.method_kwargs["ckpt_path"] == str(last) and requeued.folder == last.parents[1]
    requeued.execute()
    ended = torch.load(last, map_location="cpu", weights_only=True)
    assert (ended["global_step"], ended["epoch"]) == (10, 1), (ended["global_step"], ended["epoch"])  # 2 epochs of 5 steps
    assert slurm_job.read_text() == "requeue 77\n"
