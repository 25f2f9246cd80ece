"""Setting a ``threading.Event`` from a signal handler, without the deadlock.

A Python signal handler runs in the main thread, between two of its bytecodes. ``Event.set()``
takes the lock of the event's condition; if the handler interrupted the main thread while *it*
held that lock (inside ``wait()``, ``set()`` or ``clear()`` of the same event), the handler
waits for a lock its own thread holds: the process hangs on SIGTERM. (Seen once in CI: a scaler
that never ended after SIGTERM.)

So a handler only writes a byte to a pipe (``os.write``: async-signal-safe, no lock), and a
small daemon thread reads it and sets the events there, where waiting for the lock is harmless.
"""

from __future__ import annotations

import os
import threading


class SignalSafeSetter:
    """``setter.set()`` from a signal handler sets every one of ``events`` soon after (from a
    thread of its own); safe to call from anywhere, any number of times."""

    def __init__(self, *events: threading.Event):
        self.events = events
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)  # a full pipe already says "set": never block
        threading.Thread(target=self._relay, name="tinytown-signal-relay", daemon=True).start()

    def set(self) -> None:
        try:
            os.write(self._write, b"!")
        except BlockingIOError:
            pass  # bytes are waiting already: the relay will set the events

    def _relay(self) -> None:
        while os.read(self._read, 64):
            for event in self.events:
                event.set()
