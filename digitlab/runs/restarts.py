"""Which start of a run this process belongs to. A first start claims a new run folder; a later start of the same
job continues in the folder its first start claimed, from that folder's newest ``last.ckpt``, without
``--ckpt_path``:

- a **requeued SLURM job** (SLURM_RESTART_COUNT set, the same job id): its folder is ``version_{job id}``;
- a **restarted TorchElastic worker group** (``torchrun --max-restarts N`` after a process died;
  TORCHELASTIC_RESTART_COUNT above 0): its folder is the newest whose launch file names this launch, which
  global rank 0 of the first start wrote. A launch is torchrun's rendezvous id (``--rdzv-id``, a new one for
  every ``--standalone`` launch); a launch with a fixed ``--master-addr`` and no rendezvous id is its master's
  address and port, which stay the same across its restarts.

Every process finds the same folder and checkpoint by itself, before the processes can talk to each other (their
process group is made later, inside the trainer): the logs folder must be one that every node sees (as resuming
needs anyway: every process reads the checkpoint).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any, Optional

from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from digitlab.runs import layout
from digitlab.runs.layout import RUN_PREFIX
from digitlab.utils.atomic import atomic_write_text

LAUNCH_MAX_BYTES = 1024  # a launch file holds one line: anything longer is not one digitlab wrote


def requeued() -> bool:
    """Whether this is a requeued SLURM job (SLURM_RESTART_COUNT set), which continues in its own run folder."""
    return bool(os.environ.get("SLURM_RESTART_COUNT"))


def elastic_restart() -> int:
    """How many times TorchElastic has restarted this worker group (0: the first start, or no TorchElastic)."""
    count = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return int(count) if count.isdigit() else 0


def restarts_left() -> bool:
    """Whether TorchElastic will restart this worker group if it fails now (``torchrun --max-restarts``)."""
    limit = os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0")
    return limit.isdigit() and elastic_restart() < int(limit)


def resume_hint() -> str:
    """How a fit stopped now continues: by itself after TorchElastic's restart, or by the user's resume."""
    if restarts_left():
        return "torchrun restarts the run, which resumes from it by itself"
    return "resume with `--ckpt_path last`"


def restarted() -> bool:
    """Whether this process continues a run an earlier start of its job began (a requeue, an elastic restart)."""
    return requeued() or elastic_restart() > 0


def launch() -> Optional[str]:
    """This TorchElastic launch, the same on every process and across its restarts (None without TorchElastic)."""
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    if run_id is None:
        return None
    if run_id != "none":  # torchrun's default without --rdzv-id
        return f"torchelastic run {run_id}"
    return f"torchelastic run at {os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}"


def mark_launch(folder: Path) -> None:
    """Write, into a run folder global rank 0 just claimed under TorchElastic, which launch it belongs to."""
    name = launch()
    if name is not None and rank_zero_only.rank == 0:
        atomic_write_text(folder / layout.LAUNCH_FILE, name + "\n", overwrite=False)


def launched_folder(root: Path) -> Optional[Path]:
    """The newest run folder under `root` that this TorchElastic launch's first start claimed (None if none)."""
    name = launch()
    if name is None:
        return None
    pattern = re.compile(re.escape(RUN_PREFIX) + r"(\d+)")
    found: list[tuple[int, Path]] = []
    for marker in root.glob(f"{RUN_PREFIX}*/{layout.LAUNCH_FILE}"):
        match = pattern.fullmatch(marker.parent.name)
        if match and _read_line(marker) == name:
            found.append((int(match.group(1)), marker.parent))
    return max(found)[1] if found else None


def _read_line(path: Path) -> Optional[str]:
    try:
        with path.open("rb") as file:
            return file.read(LAUNCH_MAX_BYTES).decode(errors="replace").strip()
    except OSError:
        return None


def continued_folder(root: Path) -> Optional[Path]:
    """The run folder this restarted start continues in: the SLURM job's, or the TorchElastic launch's (None when
    this is a first start, or the first start had not claimed one)."""
    if not restarted():
        return None
    job_id = SLURMEnvironment.job_id()
    if job_id is not None:
        return root / f"{RUN_PREFIX}{job_id}"
    return launched_folder(root)


def restart_resume(ckpt_path: Optional[str], trainer_config: Any) -> Optional[str]:
    """What the fit of a restarted start resumes from: its own folder's ``checkpoints/last.ckpt`` (not the newest
    of all runs), unless Lightning has its hpc checkpoint to resume from. Without one yet, it starts as its first
    start did: from the beginning (``--ckpt_path last`` or none), or from the ``--ckpt_path`` that start was given
    (the command line is the first start's). A first start: `ckpt_path` as given."""
    folder = continued_folder(layout.logs_root(trainer_config))
    if folder is None:
        return ckpt_path
    root_dir = Path(trainer_config.get("default_root_dir") or ".")
    if ckpt_path is None and requeued() and any(root_dir.glob("hpc_ckpt_*.ckpt")):
        return None  # Lightning resumes from its own, newer, hpc checkpoint
    last = folder / layout.CHECKPOINTS / layout.LAST_CHECKPOINT
    if not last.is_file():
        return None if ckpt_path == "last" else ckpt_path
    if rank_zero_only.rank == 0:
        print(f"digitlab: {_which_start()} resumes from {last}", file=sys.stderr)
    return str(last)


def _which_start() -> str:
    job_id = SLURMEnvironment.job_id()
    if requeued() and job_id is not None:
        return f"requeued SLURM job {job_id}"
    return f"{launch() or 'the job'}, restarted ({elastic_restart()} of torchrun's --max-restarts),"
