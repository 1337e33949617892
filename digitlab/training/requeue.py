"""SLURM's automatic requeue, as Lightning's `SLURMEnvironment(auto_requeue=True)` (its default in a SLURM job)
promises it: on the notice SLURM sends before it preempts a job or its time runs out (``#SBATCH
--signal=SIGUSR1@90``), the run stops after its batch, saves ``last.ckpt`` in its run folder, and global rank 0
asks SLURM to requeue the job. The requeued job (the same job id, SLURM_RESTART_COUNT set) continues in the same
run folder from that checkpoint, without ``--ckpt_path`` (`digitlab.runs.restarts`).

Lightning's own handler is not used (digitlab's, installed first, keeps Lightning from adding it): it saves from
inside the signal handler, wherever the step is (between a backward pass and its optimizer step, say), into
``default_root_dir`` instead of the run folder, then lets training go on until SLURM kills the job; under DDP that
save waits for the other processes from inside the handler. Here the notice is one more stop request
(`digitlab.utils.stop_requests`): every process stops after the same batch, and the checkpoint is the one every
stop writes, which resumes batch-exact.
"""

from __future__ import annotations

import os
import re
import subprocess
from typing import Any, Optional

from lightning.fabric.plugins.environments import ClusterEnvironment, SLURMEnvironment

from digitlab.utils import stop_requests

SCONTROL_TIMEOUT = 60  # seconds: scontrol answers at once, unless the controller is down
RESUBMIT = "Submit it again; it resumes from the checkpoint with `--ckpt_path last`."


def requeue_signal(plugins: list[Any]) -> Optional[int]:
    """The signal on which this run asks SLURM to requeue its job: None outside a SLURM job (as Lightning detects
    one), or when the trainer's plugins name another cluster environment or ``auto_requeue: false``."""
    if not SLURMEnvironment.detect():
        return None
    environment = next((plugin for plugin in plugins if isinstance(plugin, ClusterEnvironment)), None)
    if environment is None:
        return stop_requests.NOTICE  # Lightning's default: SLURMEnvironment(auto_requeue=True), on SIGUSR1
    if not isinstance(environment, SLURMEnvironment) or not environment.auto_requeue:
        return None
    stop_requests.also_notice(environment.requeue_signal)
    return int(environment.requeue_signal)


def requeue_job() -> str:
    """Ask SLURM to requeue this job (``scontrol requeue JOB``, as Lightning does): what happened, as a sentence
    for the stop's message."""
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = f"{array_job}_{os.environ.get('SLURM_ARRAY_TASK_ID')}" if array_job else os.environ.get("SLURM_JOB_ID", "")
    if not re.fullmatch(r"[0-9]+(_[0-9]+)?", job):
        return f"The job was not requeued: its id {job!r} is not a SLURM job id."
    command = ["scontrol", "requeue", job]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=SCONTROL_TIMEOUT)
    except FileNotFoundError:
        return f"The job was not requeued: `scontrol` is not on PATH. {RESUBMIT}"
    except subprocess.TimeoutExpired:
        return f"The job may not be requeued: `{' '.join(command)}` did not answer within {SCONTROL_TIMEOUT} s."
    if result.returncode != 0:
        said = (result.stderr or result.stdout).strip().splitlines()
        return (f"The job was not requeued: `{' '.join(command)}` failed ({said[-1] if said else result.returncode})"
                f". {RESUBMIT}")
    return (f"Asked SLURM to requeue job {job} (`{' '.join(command)}`): the requeued job continues this run in its "
            "folder, from that checkpoint.")
