"""The town's event feed (scope ``town.read``): ``GET /v1/events``, a page of the events after a
stream id, or a bounded long-poll for the next ones (documents: :mod:`tinytown.core.events`).

The long-poll is bounded (:mod:`tinytown.api.longpoll`): at most ``EVENTS_WAITERS_MAX``
requests wait at once per process, with those of ``GET /v1/tasks/{task_id}/log``; one past that
is answered at once (``X-Tinytown-Wait: busy``), and a stopping worker ends its waits within one
slice of ``EVENTS_BLOCK_SLICE_MS``.
"""

from __future__ import annotations

from flask import Blueprint, request

from tinytown.api import longpoll
from tinytown.api.access import protect
from tinytown.api.common import town
from tinytown.api.longpoll import WAIT_HEADER, WAITERS  # noqa: F401  (the feed's names for them)
from tinytown.api.problems import Problem
from tinytown.api.validation import query_int
from tinytown.core import defaults
from tinytown.core import events as ev
from tinytown.core.records import is_uuid

feed = Blueprint("feed", __name__)
protect(feed, "town.read")
longpoll.share_waiters(feed)

OLDEST, NEWEST = ev.OLDEST, ev.NEWEST


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

    def read(wait_ms: int) -> list[dict]:
        return t.events.read(after, limit, mission_id=mission_id, wait_ms=wait_ms)

    found, cut_short = longpoll.wait(read, wait_secs) if wait_secs else (read(0), None)
    body = {
        "events": found,
        "next_after": found[-1]["id"] if found else after,
        "count": len(found),
    }
    return body, 200, longpoll.headers(cut_short, bool(found))


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
