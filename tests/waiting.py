"""Waiting for another process without a fixed sleep: poll a condition until it holds or a deadline passes."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Callable, Optional, TypeVar

T = TypeVar("T")


def wait_for(condition: Callable[[], Optional[T]], timeout: float, what: str,
             alive: Callable[[], Optional[str]] = lambda: None, interval: float = 0.05) -> T:
    """The first true value `condition()` returns, polled every `interval` seconds. Fails naming `what` when
    `timeout` seconds pass first, or as soon as `alive()` returns a reason why waiting is pointless (the
    process that would make the condition true has exited: the reason says how)."""
    deadline = time.monotonic() + timeout
    while True:
        found = condition()
        if found:
            return found
        dead = alive()
        if dead:
            found = condition()  # it may have happened just before the process ended
            if found:
                return found
            raise AssertionError(f"{what}: gave up, {dead}")
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(interval)


def running(process) -> Callable[[], Optional[str]]:
    """For `alive=`: None while the `subprocess.Popen` runs, then how it ended."""
    return lambda: None if process.poll() is None else f"the process exited with {process.returncode}"


def line_in(path: Path, pattern: str) -> Callable[[], Optional[re.Match]]:
    """For `condition=`: the first match of `pattern` in the file at `path` (a child's output), once written."""

    def condition() -> Optional[re.Match]:
        try:
            return re.search(pattern, path.read_text(errors="replace"))
        except FileNotFoundError:
            return None

    return condition
