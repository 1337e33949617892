"""A DDP run interrupted and carried on by itself, against the same run uninterrupted, on the real MNIST files,
through the templates users copy (examples/cluster/), processes standing in for nodes (CPU, gloo):

a. uninterrupted: torchrun.sh, 1 node x 2 processes, MAX_RESTARTS=0;
b. elastic restart: the same with MAX_RESTARTS=1, local rank 1 SIGKILLed once the first last.ckpt exists;
   TorchElastic restarts both processes, which resume from that run folder's last.ckpt;
c. SLURM requeue: sbatch.sh on 2 nodes x 1 task with the fake srun and scontrol of tests/cluster/bin; SIGUSR1
   (SLURM's notice before preemption) to the tasks once the first last.ckpt exists; then the requeued job (the same
   job id, SLURM_RESTART_COUNT=1).

For each: the whole commands' wall time (b and c: from the first start to the end of the last), their exit codes,
the lines that say where a start resumed, what stopped it and the test accuracy, the run folders left, and the
largest absolute difference of the final weights (last.ckpt's state_dict) from a's.

    python benchmarks/restarts.py [--config configs/lenet5_fast.yaml] [--data DIR] [--scratch DIR] [fit options]

Fit options default to `--trainer.max_epochs 1 --last_checkpoint_every_n_steps 20`.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from common import DEFAULT_DATA, REPO, machine

sys.path.insert(0, str(REPO / "tests"))
from cluster_jobs import children, start_job, start_torchrun_node, stop_job, variable  # noqa: E402
from ports import free_port  # noqa: E402
from waiting import running, wait_for  # noqa: E402

CLUSTER = REPO / "examples" / "cluster"
DEFAULT_OPTIONS = ["--trainer.max_epochs", "1", "--last_checkpoint_every_n_steps", "20"]
SHOWN = re.compile(r"resumes from|stopped:|Asked SLURM|Test accuracy|terminate called")
JOB_ID = 4321
TIMEOUT = 1200  # seconds a start may take before the benchmark gives up


def first_checkpoint(folder: Path, process: subprocess.Popen) -> None:
    wait_for(lambda: next(folder.glob("lightning_logs/*/checkpoints/last.ckpt"), None), TIMEOUT,
             "the first last.ckpt", running(process))


def finish(process: subprocess.Popen) -> int:
    try:
        return process.wait(timeout=TIMEOUT)
    finally:
        stop_job(process)


def torchrun(folder: Path, config: str, fit: list[str], max_restarts: int, kill: bool, accelerator: str) -> list[int]:
    """a and b: examples/cluster/torchrun.sh on this machine with 2 processes (CPU, or 2 GPUs); its exit code."""
    node = start_torchrun_node(CLUSTER / "torchrun.sh", *fit, cwd=folder, node_rank=0, port=free_port(),
                               output=folder / "output.txt",
                               env={"NNODES": "1", "NPROC_PER_NODE": "2", "MAX_RESTARTS": str(max_restarts),
                                    "ACCELERATOR": accelerator, "CONFIG": config})
    if kill:
        first_checkpoint(folder, node)
        os.kill(next(pid for pid in children(node.pid) if variable(pid, "LOCAL_RANK") == "1"), signal.SIGKILL)
    return [finish(node)]


def requeue(folder: Path, config: str, fit: list[str], accelerator: str) -> list[int]:
    """c: examples/cluster/sbatch.sh on 2 nodes x 1 task, preempted, then requeued; the two starts' exit codes.
    One thread per process, as torchrun gives a's two processes (Lightning would give each task of a 1-task "node"
    every core: other float sums in the convolutions, other weights; and 2 x 2 threads on 2 cores)."""
    env = {"ACCELERATOR": accelerator, "CONFIG": config, "DIGITLAB": str(Path(sys.executable).with_name("digitlab")),
           "FAKE_SCONTROL_LOG": str(folder / "scontrol.log"), "OMP_NUM_THREADS": "1",
           "FAKE_SRUN_NODE0_CUDA_VISIBLE_DEVICES": "0", "FAKE_SRUN_NODE1_CUDA_VISIBLE_DEVICES": "1"}  # a GPU each
    options = dict(cwd=folder, job_id=JOB_ID, nodes=2, tasks_per_node=1, env=env, output=folder / "output.txt")
    job = start_job(CLUSTER / "sbatch.sh", *fit, **options)
    first_checkpoint(folder, job)
    for task in children(job.pid):  # sbatch.sh execs srun: its children are the tasks
        os.kill(task, signal.SIGUSR1)
    codes = [finish(job)]
    return codes + [finish(start_job(CLUSTER / "sbatch.sh", *fit, restart_count=1, **options))]


def final_weights(folder: Path) -> dict[str, torch.Tensor]:
    runs = sorted(folder.glob("lightning_logs/*/checkpoints/last.ckpt"))
    return torch.load(runs[-1], map_location="cpu", weights_only=True)["state_dict"] if runs else {}


def largest_difference(weights: dict, reference: dict) -> str:
    if not weights or weights.keys() != reference.keys():
        return "not comparable (no last.ckpt, or other parameters)"
    return str(max(float((weights[name] - value).abs().max()) for name, value in reference.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/lenet5_fast.yaml")
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--scratch", help="folder for the runs (default: a temporary one, removed after)")
    parser.add_argument("--accelerator", default="cpu", choices=("cpu", "gpu"),
                        help="gpu: 2 GPUs, NCCL (benchmarks/gpu_check.sh); cpu: 2 processes, gloo")
    args, options = parser.parse_known_args()
    config = str((REPO / args.config).resolve())
    fit = ["--data.data_dir", str(Path(args.data).resolve()), *(options or DEFAULT_OPTIONS)]
    scratch = Path(args.scratch or tempfile.mkdtemp(prefix="restarts_")).resolve()
    # The tasks import this checkout's digitlab, whatever is installed.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    print(f"machine: {machine(1)} (threads: per process of the runs)")
    print(f"config: {config}, fit options: {' '.join(fit)}\nscratch: {scratch}\n")
    on = args.accelerator
    flows = [("a. uninterrupted (torchrun.sh, MAX_RESTARTS=0)", lambda f: torchrun(f, config, fit, 0, False, on)),
             ("b. elastic restart (torchrun.sh, MAX_RESTARTS=1, local rank 1 SIGKILLed)",
              lambda f: torchrun(f, config, fit, 1, True, on)),
             ("c. SLURM requeue (sbatch.sh, fake srun and scontrol, SIGUSR1, then the requeued job)",
              lambda f: requeue(f, config, fit, on))]
    reference = None
    try:
        for index, (name, flow) in enumerate(flows):
            folder = scratch / "abc"[index]
            folder.mkdir(parents=True)
            start = time.perf_counter()
            codes = flow(folder)
            seconds = time.perf_counter() - start
            said = (folder / "output.txt").read_text(errors="replace").splitlines()
            weights = final_weights(folder)
            reference = weights if reference is None else reference
            print(f"{name}\n  wall time: {seconds:.1f} s, exit code(s): {', '.join(map(str, codes))}")
            for line in said:
                if SHOWN.search(line):
                    print(f"  | {line.strip()[:300]}")
            if (folder / "scontrol.log").exists():
                print(f"  scontrol calls: {(folder / 'scontrol.log').read_text().strip()!r}")
            print(f"  tracebacks: {sum('Traceback' in line for line in said)}")
            print(f"  folders: {sorted(str(p.relative_to(folder)) for p in folder.glob('*') if p.is_dir())}, "
                  f"run folders: {sorted(p.name for p in folder.glob('lightning_logs/*'))}")
            print(f"  largest weight difference from a: {largest_difference(weights, reference)}\n")
    finally:
        if args.scratch is None:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
