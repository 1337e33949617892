"""Run folders: each run (``version_N``) and each evaluation of a run (``version_N/test_K``) gets a folder of
its own, claimed atomically, so that runs started at the same moment in one log folder never share one.

A claim is one ``mkdir``: the operating system lets exactly one process create a given folder, so two
processes that both see ``version_3`` as the next free number cannot both get it; the loser takes the next.
Only the global rank 0 of a multi-process run claims; the other processes never write into the folder
(Lightning hands them rank 0's checkpoint folder), so they only need a name.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from digitlab.config.import_names import check_run_config
from digitlab.errors import RunNotWritten, UserError
from digitlab.runs import checkpoints, layout, ownership
from digitlab.runs.layout import EVALUATION_SUBCOMMANDS, RUN_PREFIX, run_folder_of
from digitlab.runs.restarts import elastic_restart, launch, launched_folder, mark_launch, restarted
from digitlab.utils.destination import NO_ROOM, NOT_WRITABLE, file_system_of, write_probe



def next_number(root: Path, prefix: str) -> int:
    """One more than the highest ``{prefix}N`` folder in `root` (0 when there is none)."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)")
    numbers = [int(m.group(1)) for p in _folders(root) if (m := pattern.fullmatch(p.name))]
    return max(numbers, default=-1) + 1


def check_runs_folder(root: Path) -> None:
    """Refuse a runs' folder (``lightning_logs``, a sweep's folder) that is, or lies under, something other than
    a folder: mkdir would fail with a traceback, and nothing must be created beside a file digitlab did not make."""
    for path in (root, *root.parents):
        if path.is_dir():
            return
        if path.exists() or path.is_symlink():  # a file, a FIFO, a dangling symlink
            raise UserError(f"{path} is not a folder, but runs are written under it ({root}). Move it away, or "
                            "write the runs elsewhere with --trainer.default_root_dir DIR.")


def claim(root: Path, prefix: str = RUN_PREFIX) -> Path:
    """Create and return a new folder ``root/{prefix}N``, N the next free number, never one that exists; a folder
    that cannot be written (read-only, full) raises `RunNotWritten`, leaving nothing."""
    check_runs_folder(root)
    if rank_zero_only.rank != 0:  # the folder rank 0 claims: other ranks only need its name, never write in it
        return root / f"{prefix}{next_number(root, prefix)}"
    with _storage_errors(root):
        root.mkdir(parents=True, exist_ok=True)
    number = next_number(root, prefix)
    while True:
        folder = root / f"{prefix}{number}"
        try:
            with _storage_errors(root):
                folder.mkdir()
            return _writable(folder)
        except FileExistsError:  # another process claimed it between our look and our mkdir
            number += 1


def unwritable(error: OSError, folder: Path, started: bool = False) -> Optional[RunNotWritten]:
    """`error`, met writing the run folder `folder` (or the folder that holds it), as one paragraph that says
    what, where (the folder and its file system) and how to fix it; None for an error that is not the place's
    fault (a bug: its traceback is shown). `started`: the run had trained or evaluated something."""
    reason = error.strerror or str(error)
    where = f"{folder.absolute()} (on the file system mounted at {file_system_of(folder)})"
    elsewhere = "or write the runs to another file system with --trainer.default_root_dir DIR"
    if error.errno in NO_ROOM:
        fix = "raise the file-size limit (`ulimit -f`)" if error.errno == errno.EFBIG else "free some space on it"
        done = ("The run stopped; its last checkpoint, if one was saved, is kept (resume with `--ckpt_path last`)."
                if started else "The run did not start, and its folder is removed.")
        return RunNotWritten(f"The run could not write into {where}: {reason}. {done} To fix it, {fix}, "
                             f"{elsewhere}.", 1, reason)
    if error.errno in NOT_WRITABLE:
        return RunNotWritten(f"The run cannot write into {where}: {reason}. Nothing was written. To fix it, remount "
                             f"a read-only file system read-write or fix the folder's permissions, {elsewhere}.", 2,
                             reason)
    return None


@contextlib.contextmanager
def _storage_errors(folder: Path) -> Iterator[None]:
    """A storage fault (full, read-only) writing `folder` as `unwritable`'s paragraph; other errors as they are."""
    try:
        yield
    except FileExistsError:
        raise
    except OSError as error:
        refusal = unwritable(error, folder)
        if refusal is None:
            raise
        raise refusal from None


def _writable(folder: Path) -> Path:
    """`folder`, just claimed, once a small write into it worked: a full disk is said before any writer starts.
    When it fails the claim is released (nothing is left) and `RunNotWritten` raised."""
    try:
        write_probe(folder)
    except OSError as error:
        release_if_empty(folder)
        refusal = unwritable(error, folder)
        if refusal is None:
            raise
        raise refusal from None
    return folder


def claim_job_folder(root: Path, job_id: int, continues: bool) -> Path:
    """``root/version_{job_id}``, Lightning's run folder for a SLURM job: every rank knows the job's id, and a
    requeued (or restarted) job continues in its own folder."""
    folder = root / f"{RUN_PREFIX}{job_id}"
    check_runs_folder(root)
    if rank_zero_only.rank == 0:
        with _storage_errors(root):
            root.mkdir(parents=True, exist_ok=True)
        try:
            with _storage_errors(root):
                folder.mkdir(exist_ok=continues)
        except FileExistsError:  # a folder left by another job of the same id is never shared
            raise UserError(f"The run folder {folder} already exists: another SLURM job with id {job_id} wrote it, "
                            "and digitlab never writes into an earlier run. Move it away, or set "
                            "trainer.default_root_dir to another folder.") from None
        return _held(_writable(folder))
    return folder


def _held(folder: Path) -> Path:
    """`folder`, once this process holds it (`ownership.hold`); a folder another job holds is refused."""
    ownership.hold(folder)
    return folder


def claim_fixed_version(spec: dict, continues: bool, claimed: Sequence[Path] = ()) -> Optional[Path]:
    """The run folder of a logger given an explicit version (``save_dir/name/version_5``, or the string version),
    claimed with one ``mkdir`` before any logger writes: of two runs started together, one gets it and the other
    is refused, writing nothing. None for a logger whose folder digitlab chooses or that writes none."""
    init_args = spec.get("init_args") or {}
    version = init_args.get("version")
    if version is None or not {"save_dir", "name"} <= set(init_args):
        return None
    name = f"{RUN_PREFIX}{version}" if isinstance(version, int) else str(version)  # as Lightning names it
    folder = Path(init_args["save_dir"] or ".") / (init_args["name"] or "") / name
    if rank_zero_only.rank != 0 or folder in claimed:  # rank 0 claims it once, for all the run's loggers
        return folder
    if continues and folder.is_dir():  # a requeued or restarted job continues in its own folder: nothing to claim
        ownership.hold(folder)
        return None
    try:
        with _storage_errors(folder.parent):
            folder.mkdir(parents=True)
    except FileExistsError:  # even an empty one: it may be another run's, claimed a moment ago
        raise earlier_run(folder) from None
    return _held(_writable(folder))


def earlier_run(folder: Any) -> UserError:
    """The refusal of a logger's explicitly chosen run folder that an earlier (or a concurrent) run holds."""
    return UserError(f"The run folder {folder} already exists and digitlab never writes into an earlier run. "
                     "Leave the logger's version unset (a new version_N is chosen), or pick an unused version.")


def release_if_empty(folder: Optional[Path]) -> None:
    """Remove a claimed folder that nothing was written into (a command that failed before its run started)."""
    if folder is None or rank_zero_only.rank != 0:
        return
    ownership.release(folder)
    if folder.is_dir() and {p.name for p in folder.iterdir()} <= set(layout.OWN_MARKERS):
        for marker in layout.OWN_MARKERS:  # written as it was claimed: nothing of the run's
            (folder / marker).unlink(missing_ok=True)
    for empty in (folder, folder.parent):  # the run's folder, then the runs' folder if this run made it
        try:
            empty.rmdir()  # refuses a folder that holds anything: never removes a file
        except FileNotFoundError:  # already discarded (`discard_unstarted`)
            continue
        except OSError:
            return




def discard_unstarted(folder: Optional[Path]) -> None:
    """Remove a run folder this command claimed, when the run was refused before it trained anything: it then
    holds only what every run writes as it starts (its config, hyperparameters, an events file), no checkpoint."""
    if folder is None or rank_zero_only.rank != 0 or not folder.is_dir():
        return
    started = [p for p in folder.rglob("*") if p.is_file() and not any(p.match(f) for f in layout.RUN_START_FILES)]
    if not started and not (folder / layout.CHECKPOINTS).exists():
        ownership.release(folder)
        shutil.rmtree(folder, ignore_errors=True)


def _folders(root: Path) -> list[Path]:
    try:
        return [Path(entry.path) for entry in os.scandir(root) if entry.is_dir()]
    except OSError:
        return []


def claim_run_folder(subcommand: str, logs_root: Path, ckpt_path: Optional[str]) -> Path:
    """The folder of this command's run: a new ``version_N`` under `logs_root` for `fit` (under SLURM,
    ``version_{job id}``); for an evaluation of a run's checkpoint, a new ``validate_K`` or ``test_K`` inside
    that run's folder (of any other checkpoint, or of a run whose folder cannot be written, a read-only one,
    under `logs_root`: the command says so in one line)."""
    if subcommand in EVALUATION_SUBCOMMANDS:
        prefix = f"{subcommand}_"
        run = run_folder_of(ckpt_path) if ckpt_path else None
        if run is None:
            return claim(logs_root, prefix)
        try:
            return claim(run, prefix)
        except RunNotWritten as refused:  # a checkpoint on a read-only (or full) disk can still be evaluated
            try:
                folder = claim(logs_root, prefix)
            except RunNotWritten as also:
                raise RunNotWritten(f"The checkpoint's run folder {run} cannot be written ({refused.reason}), so "
                                    f"this {subcommand} would be logged in {logs_root}; but t{str(also)[1:]}",
                                    also.exit_code, also.reason) from None  # `also` begins "The run ..."
            print(f"digitlab: the checkpoint's run folder {run} cannot be written ({refused.reason}), so this "
                  f"{subcommand} is logged in {folder}", file=sys.stderr)
            return folder
    job_id = SLURMEnvironment.job_id()
    if job_id is not None:
        return claim_job_folder(logs_root, job_id, continues=restarted())
    if launch() is None:
        return _held(claim(logs_root))
    earlier = launched_folder(logs_root) if elastic_restart() else None
    if earlier is not None:  # a restarted TorchElastic worker group continues its first start's run
        return _held(_writable(earlier)) if rank_zero_only.rank == 0 else earlier
    folder = claim(logs_root)
    mark_launch(folder)
    return _held(folder)


def with_run_config(subcommand: str, args: list[str]) -> list[str]:
    """`args`, plus ``--config RUN/config.yaml`` when an evaluation names a run's checkpoint and no config:
    ``digitlab test --ckpt_path lightning_logs/version_0/checkpoints/last.ckpt`` tests it as it was trained."""
    if subcommand not in EVALUATION_SUBCOMMANDS or any(a in ("--config", "-c") or a.startswith("--config=")
                                                        for a in args):
        return args
    ckpt_path = _option(args, "--ckpt_path")
    if ckpt_path:  # `last`, `best`, a run: without a config, only the command line can move the runs' folder
        root_dir = _option(args, "--trainer.default_root_dir")
        ckpt_path = checkpoints.named(ckpt_path, layout.logs_root({"default_root_dir": root_dir}))
    run = run_folder_of(ckpt_path) if ckpt_path and Path(ckpt_path).is_file() else None
    if run is None or not (run / layout.RUN_CONFIG).is_file():
        return args
    check_run_config(run / layout.RUN_CONFIG, args)
    print(f"digitlab: using the run's config, {run / layout.RUN_CONFIG}", file=sys.stderr)
    return ["--config", str(run / layout.RUN_CONFIG), *args]


def claim_trial_folder(sweep_folder: Path, number: int) -> Path:
    """``sweep_folder/trial_N``, the run folder of a sweep's trial N: two workers can never share one."""
    folder = sweep_folder / f"{layout.TRIAL_PREFIX}{number}"
    try:
        with _storage_errors(sweep_folder):
            folder.mkdir(parents=True)
    except FileExistsError:
        raise UserError(f"{folder} already exists, so trial {number} of this sweep has nowhere to run: the folder "
                        "holds a trial of an earlier sweep of the same name that is not in this storage. Move "
                        "that folder away, or give the sweep another --name.") from None
    return _writable(folder)


def _option(args: list[str], name: str) -> Optional[str]:
    for index, arg in enumerate(args):
        if arg == name and index + 1 < len(args):
            return args[index + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None
