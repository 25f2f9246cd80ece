"""Bounded long-polls, shared by every route that can wait (``GET /v1/events``,
``GET /v1/tasks/{task_id}/log``, ``GET /api/scaling?wait=``, whose reads wait on the process's
event pump instead of Redis).

A long-poll holds one of its process's gunicorn threads (``TOWNHALL_THREADS``) while it waits.
So that waiting clients never starve the API, at most ``EVENTS_WAITERS_MAX`` requests wait at
once per process, whichever route they came by (one semaphore per app, taken without blocking):
one past that is answered at once with what there is, ``X-Tinytown-Wait: busy`` and, when it
found nothing, ``Retry-After`` — clients never queue for a thread, and the other threads stay
free for probes, ``/api/scaling`` and the rest of the API. A wait is a series of blocking reads
of at most ``EVENTS_BLOCK_SLICE_MS``; between two of them, a worker that gunicorn is stopping
ends it (``X-Tinytown-Wait: stopping``), so a long-poll delays shutdown by one slice at most.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from flask import Blueprint, current_app
from flask.blueprints import BlueprintSetupState

from tinytown.core import defaults

RETRY_AFTER_SECS = 1  # what an answer that could not wait, and found nothing, asks
WAIT_HEADER = "X-Tinytown-Wait"
WAITERS = "tinytown.longpoll_waiters"

Found = TypeVar("Found")


def share_waiters(bp: Blueprint) -> None:
    """Give ``bp``'s app the one semaphore of waiting places all long-polls share."""

    @bp.record_once
    def _make_waiters(state: BlueprintSetupState) -> None:
        waiters = threading.BoundedSemaphore(defaults.EVENTS_WAITERS_MAX)
        state.app.extensions.setdefault(WAITERS, waiters)


def wait(read: Callable[[int], Found], wait_secs: int) -> tuple[Found, str | None]:
    """``read(wait_ms)``'s answer, waiting up to ``wait_secs`` in all for one that is not empty,
    if a waiter's place is free; and why the wait was cut short (``busy``, ``stopping``), if it
    was. ``read`` blocks at most ``wait_ms`` (0: not at all)."""
    waiters = current_app.extensions[WAITERS]
    if not waiters.acquire(blocking=False):
        return read(0), "busy"
    try:
        deadline = time.monotonic() + wait_secs
        while not worker_stopping():
            left_ms = int((deadline - time.monotonic()) * 1000)
            found = read(min(left_ms, defaults.EVENTS_BLOCK_SLICE_MS))
            if found or left_ms <= defaults.EVENTS_BLOCK_SLICE_MS:
                return found, None
        return read(0), "stopping"
    finally:
        waiters.release()


def headers(cut_short: str | None, found: bool) -> dict[str, str]:
    """The answer's headers: why a wait was cut short, and when to ask again if nothing came."""
    if not cut_short:
        return {}
    out = {WAIT_HEADER: cut_short}
    if not found:
        out["Retry-After"] = str(RETRY_AFTER_SECS)
    return out


def worker_stopping() -> bool:
    """Whether gunicorn is stopping this worker process. Its worker handles SIGTERM with its own
    bound method, which sets the worker's ``alive`` to False; outside gunicorn (Flask's test
    client, ``flask run``) the handler belongs to no worker and this is always False."""
    worker = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)
    return getattr(worker, "alive", True) is False
