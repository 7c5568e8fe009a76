"""Ctrl-C and SIGTERM set an event without a lock in the signal handler (kindler/stopping.py)."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from kindler.stopping import stop_on_signals


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_sets_the_event(number: signal.Signals) -> None:
    stop = threading.Event()
    with stop_on_signals(stop):
        os.kill(os.getpid(), number)
        assert stop.wait(5)


@pytest.mark.timeout(30)
def test_a_signal_while_the_main_thread_holds_the_events_lock_still_sets_it() -> None:
    # As inside stop.wait(): the handler runs while this thread holds the
    # event's lock. Setting the event in the handler would wait for it forever.
    stop = threading.Event()
    with stop_on_signals(stop):
        with stop._cond:  # type: ignore[attr-defined]
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.2)
            assert not stop.is_set()
        assert stop.wait(5)


def test_other_signals_do_not_set_it() -> None:
    stop = threading.Event()
    previous = signal.signal(signal.SIGUSR1, lambda number, frame: None)
    try:
        with stop_on_signals(stop):
            os.kill(os.getpid(), signal.SIGUSR1)
            assert not stop.wait(0.5)
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_the_handlers_and_wakeup_are_given_back() -> None:
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with stop_on_signals(threading.Event()):
        pass
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    assert signal.set_wakeup_fd(-1) == -1
    assert [thread for thread in threading.enumerate() if thread.name == "kindler-signals"] == []
