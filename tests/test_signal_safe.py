"""A signal handler sets events through a pipe: ``Event.set()`` in the handler itself could
wait for a lock the interrupted main thread holds (a scaler once never ended after SIGTERM)."""

from __future__ import annotations

import signal
import threading
import time

from tinytown.core.signal_safe import SignalSafeSetter


def test_a_handler_that_fires_inside_the_events_own_wait_sets_it_without_a_deadlock():
    stop, other = threading.Event(), threading.Event()
    setter = SignalSafeSetter(stop, other)
    previous = signal.signal(signal.SIGALRM, lambda *_: setter.set())
    try:
        began = time.monotonic()
        signal.setitimer(signal.ITIMER_REAL, 0.05)  # fires while this thread waits on `stop`
        assert stop.wait(5) and other.wait(1)
        assert time.monotonic() - began < 2
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_setting_it_many_times_before_the_relay_reads_never_blocks():
    event = threading.Event()
    setter = SignalSafeSetter(event)
    for _ in range(200_000):  # far more bytes than a pipe holds
        setter.set()
    assert event.wait(2)
