"""`digitlab.utils.stop_requests`: what one Ctrl-C or SIGTERM, and a second one, do in each kind of place, with
real signals sent to this process (the handlers are installed only for the test, and put back after)."""

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from digitlab.errors import StopSignal
from digitlab.utils import atomic, stop_requests
from digitlab.utils.atomic import atomic_write

pytestmark = pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                                reason="signal handlers can only be set in the main thread")


@pytest.fixture(autouse=True)
def handlers():
    before = {signum: signal.getsignal(signum) for signum in stop_requests.SIGNALS}
    with stop_requests.handled():
        yield
    assert {signum: signal.getsignal(signum) for signum in stop_requests.SIGNALS} == before  # put back


def send(signum: int) -> None:
    """Deliver `signum` to this process; Python runs its handler before the next line."""
    os.kill(os.getpid(), signum)


def press_again_later(monkeypatch) -> None:
    """Make the next signal come `DOUBLE_PRESS` seconds after the first, without waiting that long."""
    now = time.monotonic()
    monkeypatch.setattr(stop_requests.time, "monotonic", lambda: now + stop_requests.DOUBLE_PRESS + 0.1)


@pytest.mark.parametrize("signum, name, code", [(signal.SIGINT, "Ctrl-C (SIGINT)", 130),
                                                (signal.SIGTERM, "SIGTERM", 143)])
def test_outside_any_scope_the_signal_is_raised_where_the_program_is(signum, name, code):
    with pytest.raises(StopSignal) as stop:
        send(signum)
    assert (stop.value.name, stop.value.exit_code, stop.value.at_once) == (name, code, False)
    assert stop_requests.requested().name == name  # remembered until the command reports it
    with pytest.raises(StopSignal):
        stop_requests.raise_if_requested()


def test_a_second_signal_soon_after_the_first_is_a_double_press_and_changes_nothing():
    with pytest.raises(StopSignal):
        send(signal.SIGINT)
    send(signal.SIGINT)  # while the first stop unwinds: it must not break that clean-up
    send(signal.SIGTERM)
    assert stop_requests.requested().name == "Ctrl-C (SIGINT)"  # the first one names the stop


def test_a_graceful_scope_is_told_and_the_program_goes_on_to_its_boundary():
    told = []
    with stop_requests.graceful(lambda: told.append("stop") or True):
        send(signal.SIGTERM)
        send(signal.SIGINT)  # a double press: told once
    assert told == ["stop"]
    with pytest.raises(StopSignal) as stop:
        stop_requests.raise_if_requested()  # the boundary: the next phase does not begin
    assert stop.value.exit_code == 143


def test_a_scope_that_cannot_stop_now_lets_the_signal_act_as_outside():
    with stop_requests.graceful(lambda: False):
        with pytest.raises(StopSignal):
            send(signal.SIGINT)


def test_pressing_again_later_stops_a_graceful_scope_at_once(monkeypatch):
    told = []
    with stop_requests.graceful(lambda: told.append("stop") or True):
        send(signal.SIGINT)
        press_again_later(monkeypatch)
        with pytest.raises(StopSignal) as stop:
            send(signal.SIGINT)
    assert told == ["stop"] and stop.value.at_once


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_deferred_block_finishes_then_stops(signum):
    done = []
    with pytest.raises(StopSignal):
        with stop_requests.deferred():
            send(signum)
            done.append("the rest of the block")
    assert done == ["the rest of the block"]


def test_a_deferred_block_can_leave_the_stop_to_its_caller():
    with stop_requests.deferred(raise_at_end=False):
        send(signal.SIGTERM)
    assert stop_requests.requested() is not None
    with pytest.raises(StopSignal):
        stop_requests.raise_if_requested()


def test_nested_deferred_blocks_stop_at_the_end_of_the_outermost():
    steps = []
    with pytest.raises(StopSignal):
        with stop_requests.deferred():
            with stop_requests.deferred():
                send(signal.SIGINT)
            steps.append("after the inner block")
    assert steps == ["after the inner block"]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_file_stopped_while_written_is_not_written_at_all(tmp_path, signum):
    target = tmp_path / "result.txt"
    target.write_bytes(b"the previous content")

    def write(stream) -> None:
        stream.write(b"first half, ")
        send(signum)
        stream.write(b"second half")

    with pytest.raises(StopSignal):
        atomic_write(target, write, overwrite=True)
    assert target.read_bytes() == b"the previous content"
    assert [p.name for p in tmp_path.iterdir()] == ["result.txt"]  # no temporary file left


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_file_stopped_while_given_its_name_is_whole(tmp_path, monkeypatch, signum):
    target = tmp_path / "result.txt"
    original = atomic._fsync_file

    def fsync_file(path: Path) -> None:
        send(signum)
        original(path)

    monkeypatch.setattr(atomic, "_fsync_file", fsync_file)
    with pytest.raises(StopSignal):
        atomic_write(target, lambda stream: stream.write(b"all of it"), overwrite=False)
    assert target.read_bytes() == b"all of it"
    assert [p.name for p in tmp_path.iterdir()] == ["result.txt"]


def test_install_forgets_an_earlier_request_and_keeps_an_ignored_signal_ignored():
    with pytest.raises(StopSignal):
        send(signal.SIGTERM)
    stop_requests.uninstall()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a shell's background job starts
    try:
        stop_requests.install()
        assert stop_requests.requested() is None
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert stop_requests.installed()  # SIGTERM is handled
    finally:
        stop_requests.uninstall()
        signal.signal(signal.SIGINT, previous)
        stop_requests.install()  # for the fixture to take down


def test_handled_leaves_handlers_in_place_when_already_installed():
    handler = signal.getsignal(signal.SIGTERM)
    with stop_requests.handled():
        assert signal.getsignal(signal.SIGTERM) is handler
    assert signal.getsignal(signal.SIGTERM) is handler


def test_a_stop_message_starts_a_line_of_its_own_after_a_progress_bar(monkeypatch, capsys):
    import io
    import sys

    from digitlab import cli

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    bar = Terminal("Epoch 0:  40%|████      | 4/10")
    bar.seek(0, io.SEEK_END)
    monkeypatch.setattr(sys, "stdout", bar)
    monkeypatch.setattr(cli, "_run", lambda args: send(signal.SIGTERM))
    with pytest.raises(SystemExit) as exit:
        cli.main(["fit"])
    assert exit.value.code == 143 and bar.getvalue().endswith("4/10\n")
    assert capsys.readouterr().err.startswith("digitlab: stopped: by SIGTERM before `digitlab fit` had finished")
    stop_requests.install()  # main gave the handlers back: the fixture takes them down
