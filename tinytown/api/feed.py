"""The town's event feed (scope ``town.read``): ``GET /v1/events``, a page of the events after a
stream id, or a bounded long-poll for the next ones (documents: :mod:`tinytown.core.events`).

A long-poll holds one of its process's gunicorn threads (``TOWNHALL_THREADS``) while it waits.
So that waiting clients never starve the API, at most ``EVENTS_WAITERS_MAX`` requests wait at
once per process (a semaphore taken without blocking): one past that is answered at once with
what there is, ``X-Tinytown-Wait: busy`` and, when it found nothing, ``Retry-After`` — clients
never queue for a thread, and the other threads stay free for probes, ``/api/scaling`` and the
rest of the API. A wait is a series of blocking reads of at most ``EVENTS_BLOCK_SLICE_MS``;
between two of them, a worker that gunicorn is stopping ends it (``X-Tinytown-Wait:
stopping``), so a long-poll delays shutdown by one slice at most.
"""

from __future__ import annotations

import signal
import threading
import time

from flask import Blueprint, current_app, request
from flask.blueprints import BlueprintSetupState

from tinytown.api.access import protect
from tinytown.api.common import town
from tinytown.api.problems import Problem
from tinytown.api.validation import query_int
from tinytown.core import defaults
from tinytown.core import events as ev
from tinytown.core.records import is_uuid
from tinytown.store import Town

feed = Blueprint("feed", __name__)
protect(feed, "town.read")

OLDEST, NEWEST = ev.OLDEST, ev.NEWEST
RETRY_AFTER_SECS = 1  # what an answer that could not wait, and found nothing, asks
WAIT_HEADER = "X-Tinytown-Wait"
WAITERS = "tinytown.events_waiters"


@feed.record_once
def _make_waiters(state: BlueprintSetupState) -> None:
    """One semaphore per app, that is per townhall process."""
    state.app.extensions[WAITERS] = threading.BoundedSemaphore(defaults.EVENTS_WAITERS_MAX)


@feed.get("/v1/events")
def events():
    """Events after ``after``, oldest first; with ``wait``, waits for the first one."""
    after = event_cursor()
    mission_id = _mission()
    limit = query_int("limit", defaults.TOWNHALL_PAGE_LIMIT, 1, defaults.EVENTS_PAGE_MAX)
    wait_secs = query_int("wait", 0, 0, defaults.EVENTS_WAIT_MAX_SECS)
    t = town()
    if after == NEWEST:
        after = t.events.last_id(mission_id)
    if wait_secs:
        found, cut_short = _wait(t, after, limit, mission_id, wait_secs)
    else:
        found, cut_short = t.events.read(after, limit, mission_id=mission_id), None
    headers = {}
    if cut_short:
        headers[WAIT_HEADER] = cut_short
        if not found:
            headers["Retry-After"] = str(RETRY_AFTER_SECS)
    body = {
        "events": found,
        "next_after": found[-1]["id"] if found else after,
        "count": len(found),
    }
    return body, 200, headers


def _wait(
    t: Town, after: str, limit: int, mission_id: str | None, wait_secs: int
) -> tuple[list[dict], str | None]:
    """The events after ``after``, waiting up to ``wait_secs`` for the first, if a waiter's
    place is free; and why the wait was cut short (``busy``, ``stopping``), if it was."""
    waiters = current_app.extensions[WAITERS]
    if not waiters.acquire(blocking=False):
        return t.events.read(after, limit, mission_id=mission_id), "busy"
    try:
        deadline = time.monotonic() + wait_secs
        while not worker_stopping():
            left_ms = int((deadline - time.monotonic()) * 1000)
            found = t.events.read(
                after,
                limit,
                mission_id=mission_id,
                wait_ms=min(left_ms, defaults.EVENTS_BLOCK_SLICE_MS),
            )
            if found or left_ms <= defaults.EVENTS_BLOCK_SLICE_MS:
                return found, None
        return t.events.read(after, limit, mission_id=mission_id), "stopping"
    finally:
        waiters.release()


def worker_stopping() -> bool:
    """Whether gunicorn is stopping this worker process. Its worker handles SIGTERM with its own
    bound method, which sets the worker's ``alive`` to False; outside gunicorn (Flask's test
    client, ``flask run``) the handler belongs to no worker and this is always False."""
    worker = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)
    return getattr(worker, "alive", True) is False


def event_cursor() -> str:
    """The ``after`` query parameter (:func:`tinytown.core.events.cursor`); 400 naming it."""
    raw = request.args.get("after") or OLDEST
    try:
        return ev.cursor(raw)
    except ValueError:
        raise Problem(
            400,
            f"query parameter 'after' must be {ev.CURSOR_RULE}, got {raw[:40]!r}",
            field="after",
        ) from None


def _mission() -> str | None:
    raw = request.args.get("mission")
    if not raw:
        return None
    if not is_uuid(raw.lower()):
        raise Problem(
            400,
            f"query parameter 'mission' must be a mission id (a UUID), got {raw[:40]!r}",
            field="mission",
        )
    return raw.lower()
