"""Ctrl-C (SIGINT), SIGTERM and SIGUSR1, at every point of a command's life: the first one stops the command, soon
and cleanly, and nothing is left half-written. SIGUSR1 is the notice a SLURM job asks for before it is preempted or
runs out of time (``#SBATCH --signal=SIGUSR1@90``): the run stops as on SIGTERM, and is requeued (see
`digitlab.training.requeue`).

`install` (the `digitlab` command calls it first) puts one handler on these signals for the whole process. What a
signal does depends on where the command is:

- inside a **graceful scope** (`graceful`: a trainer in one of its loops), the scope's listener is told, and
  the trainer stops itself after its current batch, saving what it must;
- inside a **deferred** block (`deferred`: a file given its name, a study told how a trial ended), the stop
  waits for the block's end, so that what the block does is done whole or not at all;
- anywhere else, `StopSignal` is raised where the program is, and unwinds it like `KeyboardInterrupt` would.

A second signal within `DOUBLE_PRESS` seconds of the first is the same request (a double press: it must not
break the clean-up the first one started); a later one stops at once, even a graceful scope. The request is
remembered (`requested`) until the command has reported it: a signal that lands between two phases (the fit
done, the test after fit not begun) stops the command there (`raise_if_requested`).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional

from digitlab.errors import StopSignal

DOUBLE_PRESS = 1.0  # seconds: a second signal sooner than this repeats the first request
SIGNALS = {signal.SIGINT: ("Ctrl-C (SIGINT)", 130), signal.SIGTERM: ("SIGTERM", 143),
           signal.SIGUSR1: ("SIGUSR1 (SLURM's notice before preemption)", 138)}
NOTICE = signal.SIGUSR1  # the signal that announces a preemption (SLURM's default): the job asks to be requeued
NOTICES = {NOTICE}  # with `also_notice`'s


@dataclass
class Request:
    """The first signal received: its name, exit code and time; `at_once` once a later one forced the stop."""

    name: str
    exit_code: int
    at: float
    at_once: bool = False
    signum: int = signal.SIGTERM

    def error(self) -> StopSignal:
        return StopSignal(self.name, self.exit_code, at_once=self.at_once)


@dataclass
class _State:
    request: Optional[Request] = None
    listeners: list[Callable[[], bool]] = field(default_factory=list)  # innermost graceful scope last
    deferring: int = 0
    raise_when_allowed: bool = False
    installed: dict[int, Any] = field(default_factory=dict)  # signal -> the handler before ours


_state = _State()


def install() -> None:
    """Handle Ctrl-C and SIGTERM as the module says, from now on, and forget an earlier request.

    A signal the process was started ignoring (a shell's background job ignores Ctrl-C) stays ignored."""
    _state.request, _state.raise_when_allowed = None, False
    if threading.current_thread() is not threading.main_thread():
        return  # handlers can only be set in the main thread
    for signum in SIGNALS:
        current = signal.getsignal(signum)
        if current is _on_signal or current is signal.SIG_IGN:
            continue
        _state.installed[signum] = current
        signal.signal(signum, _on_signal)


def take_back() -> None:
    """Handle the signals `install` handled with this module's handler again: for after Lightning put its own on
    SIGTERM at the start of a trainer's run. Its handler stops the run on this process alone and, under DDP,
    broadcasts from inside the handler, which can meet another process's collective (a hang); here the processes
    agree at the end of a batch (`digitlab.training.callbacks.interrupt`). Lightning restores this handler when
    its run ends."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in _state.installed:
        if signal.getsignal(signum) is not _on_signal:
            signal.signal(signum, _on_signal)


def also_notice(signum: int) -> None:
    """Treat `signum` as a notice before preemption too (a SLURM job's ``requeue_signal`` other than SIGUSR1):
    handled from now on like SIGUSR1."""
    signum = signal.Signals(signum)
    if signum in SIGNALS:
        NOTICES.add(signum)
        return
    SIGNALS[signum] = (f"{signum.name} (SLURM's notice before preemption)", 128 + signum)
    NOTICES.add(signum)
    if threading.current_thread() is threading.main_thread() and installed():
        _state.installed[signum] = signal.getsignal(signum)
        signal.signal(signum, _on_signal)


def adopt(signum: int) -> Request:
    """The stop asked for by `signum` on another process of a multi-process run, as if it came here (unless one
    did): the processes stop together."""
    if _state.request is None:
        name, exit_code = SIGNALS[signal.Signals(signum)]
        _state.request = Request(name, exit_code, time.monotonic(), signum=signum)
    return _state.request


def uninstall() -> None:
    """Give the signals back the handlers they had before `install`."""
    for signum, previous in _state.installed.items():
        if signal.getsignal(signum) is _on_signal:
            signal.signal(signum, previous)
    _state.installed.clear()


def installed() -> bool:
    return any(signal.getsignal(signum) is _on_signal for signum in SIGNALS)


@contextmanager
def handled() -> Iterator[None]:
    """The signals handled as the module says during the block: for code that runs outside the `digitlab`
    command (a script or a test that builds a run), which did not `install`."""
    if installed() or threading.current_thread() is not threading.main_thread():
        yield
        return
    install()
    try:
        yield
    finally:
        uninstall()


def exit_at_once_from_now() -> None:
    """A signal from now on ends the process at once, by that signal (a shell shows exit code 130 or 143): for a
    command that has finished and is only shutting down (flushing, joining threads), where an exception would
    end as a traceback."""
    if threading.current_thread() is threading.main_thread():
        for signum in SIGNALS:
            if signal.getsignal(signum) is not signal.SIG_IGN:
                signal.signal(signum, _end_by)


def _end_by(signum: int, frame: Any) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def requested() -> Optional[Request]:
    """The stop asked for since `install` (None if none)."""
    return _state.request


def raise_if_requested() -> None:
    """Stop here (raise `StopSignal`) if a stop was asked for: where a phase that stops at its own boundaries has
    ended and the next has not begun."""
    if _state.request is not None:
        _state.raise_when_allowed = False
        raise _state.request.error()


def raise_pending() -> None:
    """Stop here if a signal came during a `deferred(raise_at_end=False)` block (and no graceful scope took it)."""
    if _state.raise_when_allowed and _state.deferring == 0:
        raise_if_requested()


@contextmanager
def graceful(listener: Callable[[], bool]) -> Iterator[None]:
    """A block that can stop itself at a boundary of its own: a signal calls `listener`, which says whether the
    block will stop there (True) or cannot now (False: the signal acts as outside the block)."""
    _state.listeners.append(listener)
    try:
        yield
    finally:
        _state.listeners.remove(listener)


@contextmanager
def deferred(*, raise_at_end: bool = True) -> Iterator[None]:
    """A block a signal does not interrupt: a stop asked for meanwhile is raised when it ends (unless a graceful
    scope around it takes care of the stop). `raise_at_end=False`: the caller raises it itself, where it can
    (`raise_pending`)."""
    _state.deferring += 1
    try:
        yield
    finally:
        _state.deferring -= 1
    if raise_at_end:
        raise_pending()


def _on_signal(signum: int, frame: Any) -> None:
    name, exit_code = SIGNALS[signal.Signals(signum)]
    now = time.monotonic()
    request = _state.request
    if request is None:
        request = _state.request = Request(name, exit_code, now, signum=signum)
    elif now - request.at < DOUBLE_PRESS:
        return  # a double press: the first request is under way (perhaps unwinding, cleaning up)
    else:
        request.at_once = True  # pressed again later: whatever is under way takes too long
    if _state.listeners and not request.at_once and _state.listeners[-1]():
        return
    if _state.deferring:
        _state.raise_when_allowed = True
        return
    _state.raise_when_allowed = False
    raise request.error()
