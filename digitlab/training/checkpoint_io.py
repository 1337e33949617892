"""`AtomicCheckpointIO`: a checkpoint file is either the previous complete one or the new complete one."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import fsspec.utils
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from digitlab.runs.layout import LAST_CHECKPOINT
from digitlab.utils.atomic import atomic_write
from digitlab.errors import CheckpointNotWritten, causes


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, with local files written by `atomic_write`.

    Lightning's own atomic save writes to a temporary file in the system's temporary folder and renames it:
    when that folder is on another filesystem than the run (a tmpfs ``/tmp``, runs on disk or NFS), the
    rename fails and the fallback rewrites the checkpoint in place, so a kill or a full disk leaves a
    truncated ``last.ckpt``. Here the temporary file is beside its target. Remote paths (``s3://`` ...) are
    left to Lightning.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Optional[Any] = None) -> None:
        if storage_options is not None or fsspec.utils.get_protocol(str(path)) != "file":
            return super().save_checkpoint(checkpoint, path, storage_options)
        try:
            atomic_write(Path(path), lambda stream: torch.save(checkpoint, stream), overwrite=True)
        except (OSError, RuntimeError) as error:  # torch reports a failed write (a full disk) as a RuntimeError
            cause = next((e for e in causes(error) if isinstance(e, OSError)), error)
            reason = cause.strerror if isinstance(cause, OSError) and cause.strerror else str(cause)
            kept = "The previous one is unchanged. " if Path(path).is_file() else ""
            fix = "Free some space (or fix the folder's permissions) and"
            resumable = (Path(path).parent / LAST_CHECKPOINT).is_file()
            then = (f"{kept}{fix} resume with `--ckpt_path last`." if resumable else
                    f"{kept}The run has no {LAST_CHECKPOINT} to resume from yet: {fix} run it again.")
            raise CheckpointNotWritten(f"Could not write the checkpoint {path}: {reason}. {then}") from error

