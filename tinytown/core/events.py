"""The town's events: what happened, as one small JSON document per state change (upstream §4.5).

Every state change of a task, an agent, a mission or a work item appends one entry to the
capped stream ``tt:<town>:events`` in the same atomic step as the change (the store's Lua
scripts and transactions write it). An entry has upstream's two fields, ``event_type`` and
``data`` (the document as JSON); its stream id orders and names it. Mission events also go to
the mission's own stream ``tt:<town>:events:mission:<id>``.

Event types are upstream's where the concept is the same; those marked *added* are new here.
Notifications (:func:`notification_kind`) are a handful of these, named for what a person wants
to hear about. Pure: no I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

from tinytown.core.states import AGENT, TASK

# -- event types ------------------------------------------------------------------------------

TASK_CREATED = "task_created"  # added: a task was submitted
TASK_ASSIGNED = "task_assigned"
TASK_STARTED = "task_started"  # added: a worker claimed it and its CLI runs
TASK_REQUEUED = "task_requeued"  # added: back to pending / assigned for another attempt
TASK_COMPLETED = "task_completed"
TASK_FAILED = "task_failed"
TASK_CANCELLED = "task_cancelled"  # added
TASK_DELETED = "task_deleted"  # added: its record was deleted (backlog remove, delete, sweep)
AGENT_SPAWNED = "agent_spawned"
AGENT_STATE_CHANGED = "agent_state_changed"
AGENT_STOPPED = "agent_stopped"
AGENT_UNHEALTHY = "agent_unhealthy"  # added: the scaler reports a worker it judged unhealthy
AGENT_DELETED = "agent_deleted"  # added: its record was deleted (prune)
MISSION_STATE_CHANGED = "mission_state_changed"
MISSION_DELETED = "mission_deleted"  # added: the mission and its work were deleted
MISSION_WORK_PROMOTED = "mission_work_promoted"
MISSION_WORK_ASSIGNED = "mission_work_assigned"
MISSION_WORK_STARTED = "mission_work_started"  # added: a worker runs the item's task
MISSION_WORK_REQUEUED = "mission_work_requeued"  # added: its task vanished or a retry note
MISSION_WORK_COMPLETED = "mission_work_completed"
MISSION_WORK_BLOCKED = "mission_work_blocked"
MISSION_WORK_FAILED = "mission_work_failed"  # added: an item's task failed after its attempts
MISSION_HELP_NEEDED = "mission_help_needed"
MISSION_EVENT = "mission_event"  # a line of a mission's log
NOTIFICATION_ATTEMPT = "notification_attempt"  # added: one delivery attempt of a notification

# The event a task's move writes, by the state it moves to (a move that keeps the state writes
# none). Read by the Lua scripts, which spell no event name themselves.
TASK_EVENT_BY_STATE = {
    TASK["requeue"].target: TASK_REQUEUED,
    TASK["assign"].target: TASK_ASSIGNED,
    TASK["take_shared"].target: TASK_STARTED,
    TASK["complete"].target: TASK_COMPLETED,
    TASK["fail"].target: TASK_FAILED,
    TASK["cancel"].target: TASK_CANCELLED,
}
# A task's move to one of these carries its result's first line as the event's reason, with the
# result's last non-blank line (the CLI's own last word) after ' | ' when it is another line.
TASK_REASON_STATES = (TASK["fail"].target, TASK["cancel"].target)
# A new agent record writes AGENT_SPAWNED; a move to this state AGENT_STOPPED, any other change
# of state AGENT_STATE_CHANGED.
AGENT_STOPPED_STATE = AGENT["kill"].target

EVENT_TYPES = (
    TASK_CREATED,
    TASK_ASSIGNED,
    TASK_STARTED,
    TASK_REQUEUED,
    TASK_COMPLETED,
    TASK_FAILED,
    TASK_CANCELLED,
    TASK_DELETED,
    AGENT_SPAWNED,
    AGENT_STATE_CHANGED,
    AGENT_STOPPED,
    AGENT_UNHEALTHY,
    AGENT_DELETED,
    MISSION_STATE_CHANGED,
    MISSION_DELETED,
    MISSION_WORK_PROMOTED,
    MISSION_WORK_ASSIGNED,
    MISSION_WORK_STARTED,
    MISSION_WORK_REQUEUED,
    MISSION_WORK_COMPLETED,
    MISSION_WORK_BLOCKED,
    MISSION_WORK_FAILED,
    MISSION_HELP_NEEDED,
    MISSION_EVENT,
    NOTIFICATION_ATTEMPT,
)

# The fields a document may carry besides event_type, message and timestamp (absent = omitted).
OPTIONAL_FIELDS = (
    "agent_id",
    "task_id",
    "mission_id",
    "work_item_id",
    "old_state",
    "new_state",
    "reason",
    "target",
    "attempt",
    "status",
    "key",
    "stage",
    "items_done",
    "items_total",
)
_OPTIONAL = frozenset(OPTIONAL_FIELDS)
_TYPES = frozenset(EVENT_TYPES)

# -- notifications ----------------------------------------------------------------------------

NOTIFY_MISSION_COMPLETED = "mission_completed"
NOTIFY_MISSION_FAILED = "mission_failed"
NOTIFY_MISSION_HELP = "mission_help_needed"
NOTIFY_TASK_FAILED = "task_failed"
NOTIFY_WORKER_UNHEALTHY = "worker_unhealthy"
NOTIFICATION_KINDS = (
    NOTIFY_MISSION_COMPLETED,
    NOTIFY_MISSION_FAILED,
    NOTIFY_MISSION_HELP,
    NOTIFY_TASK_FAILED,
    NOTIFY_WORKER_UNHEALTHY,
)


# -- reading the feed -------------------------------------------------------------------------

OLDEST = "0-0"  # a cursor: from the oldest event the stream still holds
NEWEST = "$"  # a cursor: only events appended from now on
# A Redis stream id: milliseconds, optionally "-" and a sequence number; each part 64 bits.
_STREAM_ID = re.compile(r"([0-9]{1,20})(?:-([0-9]{1,20}))?")
_STREAM_ID_PART_MAX = 2**64 - 1
CURSOR_RULE = "an event id such as 1712345678901-0 (a previous page's next_after), 0-0 or $"


def cursor(text: str) -> str:
    """A read position as a client gives it: an event id, ``0-0`` or ``$`` (ValueError else)."""
    if text == NEWEST:
        return text
    match = _STREAM_ID.fullmatch(text) if text.isascii() else None
    if match is None or any(int(part or 0) > _STREAM_ID_PART_MAX for part in match.groups()):
        raise ValueError(f"{text[:40]!r} is not {CURSOR_RULE}")
    return text


def event(event_type: str, message: str, timestamp: str, **fields) -> dict:
    """An event document: type, message, time, and the given optional fields that are set."""
    if event_type not in _TYPES:
        raise ValueError(f"unknown event type {event_type!r}")
    doc = {"event_type": event_type}
    for name, value in fields.items():  # (a plain loop: this is on a submit's way to Redis)
        if name not in _OPTIONAL:
            raise ValueError(f"unknown event field {name!r}")
        if value is not None and value != "":
            doc[name] = value
    doc["message"] = message
    doc["timestamp"] = timestamp
    return doc


def entry_fields(doc: Mapping) -> tuple[str, str, str, str]:
    """The stream entry's fields for a document, as XADD takes them: upstream's ``event_type``
    and ``data``."""
    return ("event_type", doc["event_type"], "data", _compact_json(doc))


# json.dumps with options builds an encoder on every call; a task's submit makes one document.
_compact_json = json.JSONEncoder(separators=(",", ":")).encode


UNREADABLE = "unreadable"  # the type of an entry that is not an event document


def decode(entry_id: str, fields: Mapping[str, str]) -> dict:
    """A stream entry as a document with its ``id``. An entry that is not an event (written by
    hand) reads as type ``unreadable``, so a reader's cursor still moves past it."""
    try:
        doc = json.loads(fields.get("data") or "")
    except ValueError:
        doc = None
    if not isinstance(doc, dict) or not isinstance(doc.get("event_type"), str):
        return {
            "id": entry_id,
            "event_type": UNREADABLE,
            "message": "(not an event)",
            "timestamp": "",
        }
    return {"id": entry_id, **doc}


def notification_kind(doc: Mapping) -> str | None:
    """The notification an event is, if any: a mission that ended or needs help, a task that
    failed for good (its final ``failed`` state comes only after its retries), an unhealthy
    worker."""
    kind = doc.get("event_type")
    if kind == MISSION_STATE_CHANGED:
        return {"completed": NOTIFY_MISSION_COMPLETED, "failed": NOTIFY_MISSION_FAILED}.get(
            doc.get("new_state")
        )
    return {
        MISSION_HELP_NEEDED: NOTIFY_MISSION_HELP,
        TASK_FAILED: NOTIFY_TASK_FAILED,
        AGENT_UNHEALTHY: NOTIFY_WORKER_UNHEALTHY,
    }.get(kind)
