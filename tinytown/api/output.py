"""A task's output from anywhere (scope ``town.read``): ``GET /v1/tasks/{task_id}/log``, the
chunks of its CLI's output after a chunk id, or a bounded long-poll for the next ones.

The output is what its worker streams to Redis as the CLI runs (:mod:`tinytown.store.output`,
the newest ``TASK_OUTPUT_MAX_BYTES`` kept; the worker's log file keeps all of it). ``finished``
says a follower may stop: the task is in a final state and its last output is in this answer.
``truncated`` says some output between ``after`` and the last chunk here is gone (trimmed past
the bound, or dropped while the worker could not reach Redis).

The long-poll shares its waiting places with ``GET /v1/events`` (:mod:`tinytown.api.longpoll`);
a task reaching its final state ends a wait at once.
"""

from __future__ import annotations

from flask import Blueprint, request

from tinytown.api import longpoll
from tinytown.api.access import protect
from tinytown.api.common import town
from tinytown.api.problems import Problem
from tinytown.api.validation import query_int, uuid_param
from tinytown.core import defaults
from tinytown.core import events as ev
from tinytown.core.errors import NotFound
from tinytown.store.output import START, OutputPage

output = Blueprint("output", __name__)
protect(output, "town.read")
longpoll.share_waiters(output)

AFTER_RULE = "a chunk id such as 16384-0 (a previous answer's next_after), 0-0 or $"


@output.get("/v1/tasks/<task_id>/log")
def task_log(task_id: str):
    """The task's output after ``after``; with ``wait``, waits for more unless it is finished."""
    task_id = uuid_param(task_id, "task id")
    after = chunk_cursor()
    limit = query_int("limit", defaults.TOWNHALL_PAGE_LIMIT, 1, defaults.TASK_OUTPUT_PAGE_MAX)
    wait_secs = query_int("wait", 0, 0, defaults.EVENTS_WAIT_MAX_SECS)
    t = town()
    page = _page(task_id, after, limit)
    cut_short = None
    if wait_secs and not page.chunks and not page.finished:
        next_after = page.next_after

        def read(wait_ms: int) -> bool:
            return t.output.wait(task_id, next_after, wait_ms)

        _, cut_short = longpoll.wait(read, wait_secs)
        page = _page(task_id, page.after, limit)
    body = {
        "task_id": task_id,
        "chunks": [{"id": i, "text": text} for i, text in page.chunks],
        "next_after": page.next_after,
        "finished": page.finished,
        "truncated": page.truncated,
    }
    return body, 200, longpoll.headers(cut_short, bool(page.chunks))


def _page(task_id: str, after: str, limit: int) -> OutputPage:
    page = town().output.page(task_id, after, limit)
    if page is None:
        raise NotFound(f"task {task_id} not found")
    return page


def chunk_cursor() -> str:
    """The ``after`` query parameter: a stream id, ``0-0`` or ``$``; 400 naming it."""
    raw = request.args.get("after") or START
    try:
        return ev.cursor(raw)
    except ValueError:
        raise Problem(
            400, f"query parameter 'after' must be {AFTER_RULE}, got {raw[:40]!r}", field="after"
        ) from None
