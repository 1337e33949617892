"""The fake `srun` and `scontrol` of tests/cluster/bin, and tests/cluster_jobs.py, on which the SLURM tests stand:
tasks with a real srun's variables, node-local settings, signals forwarded, exit codes. Tasks here are tiny bash
scripts (milliseconds), so this module stays in the fast tier."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from cluster_jobs import FAKE_BIN, job_environment, run_job, start_job, stop_job
from conftest import REPO
from waiting import running, wait_for

SBATCH = REPO / "examples" / "cluster" / "sbatch.sh"


def srun(*command: str, nodes: int, tasks_per_node: int, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(FAKE_BIN / "srun"), *command], capture_output=True, text=True, timeout=60,
                          env=job_environment(7, nodes, tasks_per_node, env=env))


def test_srun_starts_every_task_with_the_variables_of_its_node_and_rank():
    show = 'echo "$SLURM_PROCID $SLURM_LOCALID $SLURM_NODEID $SLURM_NTASKS $SLURM_GTIDS ${DATA:-shared}"'
    result = srun("--kill-on-bad-exit=1", "bash", "-c", show, nodes=2, tasks_per_node=2,
                  env={"FAKE_SRUN_NODE1_DATA": "/node1/disk"})
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.splitlines()) == ["0 0 0 4 0,1 shared", "1 1 0 4 0,1 shared",
                                                  "2 0 1 4 2,3 /node1/disk", "3 1 1 4 2,3 /node1/disk"]


def test_srun_waits_for_every_task_and_exits_with_the_first_failure():
    result = srun("bash", "-c", 'exit $((SLURM_PROCID == 0 ? 0 : 10 + SLURM_PROCID))', nodes=3, tasks_per_node=1)
    assert result.returncode == 11


def test_srun_outside_an_allocation_refuses():
    result = subprocess.run([str(FAKE_BIN / "srun"), "true"], capture_output=True, text=True, timeout=60,
                            env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 2 and "not inside an allocation" in result.stderr


def test_scontrol_records_a_requeue(tmp_path):
    log = tmp_path / "scontrol.log"
    env = {"FAKE_SCONTROL_LOG": str(log), "PATH": "/usr/bin:/bin"}
    assert subprocess.run([str(FAKE_BIN / "scontrol"), "requeue", "4242"], env=env).returncode == 0
    assert subprocess.run([str(FAKE_BIN / "scontrol"), "show", "job"], env=env, capture_output=True).returncode == 1
    assert log.read_text() == "requeue 4242\nshow job\n"


def task_script(folder: Path) -> Path:
    """A stand-in for `digitlab`: says it is ready (with the srun it belongs to), then waits until SIGUSR1, which it
    records with its arguments, or SIGTERM."""
    script = folder / "task.sh"
    script.write_text(f"""#!/usr/bin/env bash
trap 'echo "$SLURM_RESTART_COUNT $*" > {folder}/usr1-$SLURM_PROCID; kill $waiting; exit 0' USR1
trap 'touch {folder}/term-$SLURM_PROCID; kill $waiting; exit 143' TERM
sleep 300 & waiting=$!
echo $FAKE_SRUN_PID > {folder}/ready-$SLURM_PROCID
wait $waiting
""")
    script.chmod(0o755)
    return script


def test_sigusr1_to_a_started_sbatch_job_reaches_every_task(tmp_path):
    """What a preemption test needs: start the job without waiting, signal it as SLURM's --signal does."""
    env = {"DIGITLAB": str(task_script(tmp_path)), "CONFIG": "my.yaml", "ACCELERATOR": "cpu"}
    job = start_job(SBATCH, "--more", cwd=tmp_path, job_id=31, nodes=2, tasks_per_node=2, restart_count=1, env=env)
    try:
        for rank in range(4):
            wait_for(lambda: (tmp_path / f"ready-{rank}").exists(), 60, f"task {rank} started", running(job))
        job.send_signal(signal.SIGUSR1)
        assert job.wait(timeout=60) == 0
    finally:
        stop_job(job)
    expected = ("1 fit --config my.yaml --trainer.accelerator cpu --trainer.strategy ddp --trainer.num_nodes 2 "
                "--trainer.devices 2 --more")
    assert [(tmp_path / f"usr1-{rank}").read_text().strip() for rank in range(4)] == [expected] * 4


def test_a_job_that_fails_says_so(tmp_path):
    script = tmp_path / "job.sh"
    script.write_text("srun bash -c 'echo task $SLURM_PROCID; exit $SLURM_NODEID'\n")
    result = run_job(script, cwd=tmp_path, job_id=32, nodes=2, tasks_per_node=1)
    assert result.returncode == 1
    assert sorted(result.stdout.split("\n")[:2]) == ["task 0", "task 1"]


def test_a_requeue_can_end_the_job_as_slurm_does(tmp_path):
    env = {"DIGITLAB": str(task_script(tmp_path)), "ACCELERATOR": "cpu"}
    job = start_job(SBATCH, cwd=tmp_path, job_id=33, nodes=2, tasks_per_node=1, env=env)
    try:
        for rank in range(2):
            wait_for(lambda: (tmp_path / f"ready-{rank}").read_text().strip() if (tmp_path / f"ready-{rank}").exists()
                     else None, 60, f"task {rank} started", running(job))
        srun_pid = (tmp_path / "ready-0").read_text().strip()
        assert srun_pid == str(job.pid)  # sbatch.sh execs srun: the job's process is srun
        log = tmp_path / "scontrol.log"
        requeue = {"FAKE_SCONTROL_LOG": str(log), "FAKE_SCONTROL_REQUEUE_SIGNAL": "TERM", "FAKE_SRUN_PID": srun_pid}
        assert subprocess.run([str(FAKE_BIN / "scontrol"), "requeue", "33"], env=requeue).returncode == 0
        assert job.wait(timeout=60) == 143
    finally:
        stop_job(job)
    assert log.read_text() == "requeue 33\n"
    assert (tmp_path / "term-0").exists() and (tmp_path / "term-1").exists()
