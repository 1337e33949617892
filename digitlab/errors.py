"""User-facing errors: mistakes a user can fix, reported as one paragraph without a traceback."""

from __future__ import annotations


def causes(error: BaseException | None) -> list[BaseException]:
    """`error` and what caused it, outermost first (``raise ... from``, and the error being handled)."""
    found: list[BaseException] = []
    while error is not None and error not in found:
        found.append(error)
        error = error.__cause__ or error.__context__
    return found


class UserError(Exception):
    """A mistake in the user's input (path, file, name, value). The CLI prints it and exits with code 2."""

    exit_code = 2
    label = "error"  # the word after "digitlab:" when the CLI prints it


class DataError(UserError):
    """The MNIST files are missing, unreadable, or not what they claim to be."""


class UnknownModelError(UserError, KeyError):
    """A model name that the registry does not know."""

    def __str__(self) -> str:  # KeyError would otherwise print the message in quotes
        return str(self.args[0])


class DuplicateModelError(UserError):
    """Two models claim the same registry name."""


class PluginWarning(UserWarning):
    """A model plugin could not be loaded and was skipped; the `digitlab` command prints it as one line."""


class SkippedFileWarning(UserWarning):
    """An input file (a picture to predict) could not be used and was skipped; printed as one line."""


class RunWarning(UserWarning):
    """Something about a run the user should know (it measures untrained weights, say); printed as one line."""


class TrainingDiverged(UserError):
    """The training loss became NaN or infinite; the run stopped without saving the broken weights."""

    exit_code = 1


class CheckpointNotWritten(UserError):
    """A checkpoint could not be written (a full disk, no permission); the previous one is unchanged."""

    exit_code = 1


class PeerLost(UserError):
    """Another process of a multi-process run ended (killed, its node lost) or stopped answering: this one stops
    too. Under ``torchrun --max-restarts`` the agent restarts the group, which resumes by itself."""

    exit_code = 1
    label = "stopped"


class RunNotWritten(UserError):
    """A run's folder cannot be written. A read-only file system or a folder that is not the user's is refused
    before the run starts (exit code 2, as for any output that cannot be written); a full disk or a file-size
    limit is a write that failed (exit code 1, as a checkpoint that could not be written). `reason` is the
    system's word for it ("No space left on device")."""

    def __init__(self, message: str, exit_code: int, reason: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.reason = reason


class Stopped(UserError):
    """A run stopped by Ctrl-C or SIGTERM; the message says what was saved."""

    label = "stopped"

    def __init__(self, message: str, exit_code: int, *, nothing_done: bool = False) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.nothing_done = nothing_done  # stopped before anything worth keeping: its run folder is discarded


class PredictionsNotWritten(UserError):
    """The predictions were made and printed, but their CSV file could not be written (a full disk, say)."""

    exit_code = 1


class StopSignal(BaseException):
    """Ctrl-C or SIGTERM, raised where the program was (see `digitlab.utils.stop_requests`). Not an `Exception`:
    like `KeyboardInterrupt`, it unwinds past handlers of errors. `at_once`: a second signal forced the stop."""

    def __init__(self, name: str, exit_code: int, *, at_once: bool = False) -> None:
        super().__init__(name)
        self.name, self.exit_code, self.at_once = name, exit_code, at_once
