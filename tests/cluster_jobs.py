"""Running the cluster templates of examples/cluster/ here, processes standing in for nodes.

SLURM: an sbatch-style script runs as SLURM would run it: the batch script in a shell of its own, with the
allocation's variables set and the fake `srun` and `scontrol` of tests/cluster/bin first on PATH (`srun` then
starts every task here, one process each). torchrun: `start_torchrun_node` starts a script such as
examples/cluster/torchrun.sh as on one machine of several (NODE_RANK, MASTER_ADDR, MASTER_PORT, ...).

`start_job` returns at once (a `subprocess.Popen`, to signal or wait for): SIGUSR1 or SIGTERM sent to it reaches
every task when the script `exec`s srun (as examples/cluster/sbatch.sh does), as SLURM's `--signal` reaches
them. The requeued job is the same call again with the same `job_id` and `restart_count=1`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Optional

FAKE_BIN = Path(__file__).resolve().with_name("cluster") / "bin"


def allocation(job_id: int, nodes: int, tasks_per_node: int, restart_count: Optional[int] = None,
               job_name: str = "digitlab") -> dict[str, str]:
    """The variables sbatch gives a batch script on an allocation of `nodes` nodes (all of them this machine)."""
    nodelist = ",".join(["127.0.0.1"] * nodes)  # node names that resolve here: the first is the master address
    variables = {
        "SLURM_JOB_ID": str(job_id), "SLURM_JOBID": str(job_id), "SLURM_JOB_NAME": job_name,
        "SLURM_JOB_NUM_NODES": str(nodes), "SLURM_NNODES": str(nodes),
        "SLURM_NTASKS": str(nodes * tasks_per_node), "SLURM_NPROCS": str(nodes * tasks_per_node),
        "SLURM_NTASKS_PER_NODE": str(tasks_per_node), "SLURM_TASKS_PER_NODE": f"{tasks_per_node}(x{nodes})",
        "SLURM_JOB_NODELIST": nodelist, "SLURM_NODELIST": nodelist, "SLURM_NODEID": "0",
        "SLURM_SUBMIT_HOST": "127.0.0.1", "SLURMD_NODENAME": "127.0.0.1",
    }
    if restart_count is not None:
        variables["SLURM_RESTART_COUNT"] = str(restart_count)
    return variables


# What a launcher sets for its processes: never inherited from the test's own environment.
LAUNCH_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "RANK", "LOCAL_RANK", "WORLD_SIZE", "GROUP_RANK", "NODE_RANK",
                    "DIGITLAB_DATA_DIR")


def clean_environment(env: Optional[dict[str, str]] = None) -> dict[str, str]:
    """This process's environment without any SLURM, torchrun or data-folder variable of its own, with plugins off,
    PATH starting with the fake commands then this Python's folder (`digitlab`, `python`), and `env` on top."""
    inherited = {k: v for k, v in os.environ.items()
                 if not k.startswith(("SLURM_", "FAKE_SRUN_", "TORCHELASTIC_")) and k not in LAUNCH_VARIABLES}
    path = os.pathsep.join([str(FAKE_BIN), str(Path(sys.executable).parent), inherited.get("PATH", "")])
    return {**inherited, "DIGITLAB_DISABLE_PLUGINS": "1", "PATH": path, **(env or {})}


def job_environment(job_id: int, nodes: int, tasks_per_node: int, restart_count: Optional[int] = None,
                    env: Optional[dict[str, str]] = None) -> dict[str, str]:
    """`clean_environment` with the allocation's variables, `env` on top."""
    return clean_environment({**allocation(job_id, nodes, tasks_per_node, restart_count), **(env or {})})


def start_job(script: Path, *args: str, cwd: Path, job_id: int, nodes: int = 2, tasks_per_node: int = 1,
              restart_count: Optional[int] = None, env: Optional[dict[str, str]] = None,
              output: Optional[Path] = None) -> subprocess.Popen:
    """Start `bash script ARGS` in `cwd` as the batch step of job `job_id`, without waiting. Its standard output and
    error are appended to `output` (default: cwd/slurm-JOBID.out, as sbatch's default, kept across a requeue as
    with `--open-mode=append`)."""
    output = output or cwd / f"slurm-{job_id}.out"
    return _start(script, args, cwd, job_environment(job_id, nodes, tasks_per_node, restart_count, env), output)


def start_torchrun_node(script: Path, *args: str, cwd: Path, node_rank: int, port: int, output: Path,
                        env: Optional[dict[str, str]] = None) -> subprocess.Popen:
    """Start `bash script ARGS` in `cwd` as on the machine of node `node_rank`, node 0 being this machine
    (MASTER_ADDR 127.0.0.1, MASTER_PORT `port`), without waiting; `env` sets the script's other settings (NNODES,
    NPROC_PER_NODE, ...). PYTHON is this Python unless `env` says otherwise. Output goes to `output`."""
    settings = {"NODE_RANK": str(node_rank), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                "PYTHON": sys.executable, **(env or {})}
    return _start(script, args, cwd, clean_environment(settings), output)


def _start(script: Path, args: tuple[str, ...], cwd: Path, env: dict[str, str], output: Path) -> subprocess.Popen:
    """`bash script ARGS`, its output appended to `output`, in a process group of its own: `stop_job` ends every
    process it started."""
    with open(output, "ab") as stream:
        return subprocess.Popen(["bash", str(Path(script).resolve()), *args], cwd=cwd, stdout=stream,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)


def stop_job(process: subprocess.Popen) -> None:
    """Kill what is left of a job started by `start_job` (the batch shell or srun, and every task) or of a node
    started by `start_torchrun_node` (torchrun and its processes); wait for the process itself."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:  # the group is gone: everything in it has ended
        pass
    process.wait()


def run_job(script: Path, *args: str, timeout: float = 600, **options) -> subprocess.CompletedProcess:
    """`start_job`, waited for: the completed process, its output (the job's output file's new part) in stdout."""
    cwd, job_id = options["cwd"], options["job_id"]
    output = options.setdefault("output", cwd / f"slurm-{job_id}.out")
    start = output.stat().st_size if output.exists() else 0
    process = start_job(script, *args, **options)
    try:
        code = process.wait(timeout=timeout)
    finally:
        stop_job(process)
    text = output.read_bytes()[start:].decode(errors="replace")
    return subprocess.CompletedProcess(process.args, code, text, "")


def children(pid: int) -> list[int]:
    """The processes `pid` started: a launcher's tasks (srun's, torchrun's workers)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def variable(pid: int, name: str) -> str:
    """Variable `name` in process `pid`'s environment (SLURM_PROCID, LOCAL_RANK: which task or rank it is)."""
    variables = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return next(v for v in variables if v.startswith(name.encode() + b"=")).split(b"=", 1)[1].decode()
