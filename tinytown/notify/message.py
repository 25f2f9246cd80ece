"""What a notification is: the event, its kind, the town and one idempotency key per
(event, target); the one-line text a person reads, and the link to the page that shows more
(under ``[townhall] public_url``). Pure: no I/O."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from tinytown.core import events as ev
from tinytown.core.records import is_uuid

TEXT_MAX_CHARS = 300  # a ping is one line; the event document holds the rest
SHORT_ID_CHARS = 8
TITLE_MAX_CHARS = 60  # a mission's title in a ping (the deliverer adds it as mission_title)
# The start of a task's failure reason that a ping says already ("failed after 3 attempts"):
# tinytown.worker.outcome.Outcome.verdict and tinytown.recovery word it so.
_ATTEMPTS_SAID = re.compile(
    r"^failed after \d+ attempts? \(max_attempts = \d+\); (last attempt: )?"
)

TITLES = {
    ev.NOTIFY_MISSION_COMPLETED: "mission completed",
    ev.NOTIFY_MISSION_FAILED: "mission failed",
    ev.NOTIFY_MISSION_HELP: "mission needs help",
    ev.NOTIFY_TASK_FAILED: "task failed",
    ev.NOTIFY_WORKER_UNHEALTHY: "worker unhealthy",
}


_MISSION_KINDS = (ev.NOTIFY_MISSION_COMPLETED, ev.NOTIFY_MISSION_FAILED, ev.NOTIFY_MISSION_HELP)


@dataclass(frozen=True)
class Notification:
    """One notification for one target. ``event`` is the event document with its stream id as
    ``id``; ``sent_at`` is the attempt's time (Unix seconds), for the webhook's timestamp;
    ``link`` the page to open ("" when townhall has no ``public_url``)."""

    key: str
    kind: str
    town: str
    event: Mapping = field(default_factory=dict)
    sent_at: int = 0
    link: str = ""

    @property
    def text(self) -> str:
        return text(self.kind, self.event)

    @property
    def title(self) -> str:
        return f"{self.town}: {TITLES.get(self.kind, self.kind.replace('_', ' '))}"


def link_for(base_url: str | None, kind: str, doc: Mapping) -> str:
    """The status page a person opens from a ping: the mission's page for a mission's
    notification, the task's page for a failed task, else the town's page; "" without a
    ``base_url`` (``[townhall] public_url``). Only a well-formed id is put in a link."""
    if not base_url:
        return ""
    mission_id, task_id = doc.get("mission_id"), doc.get("task_id")
    if kind in _MISSION_KINDS and is_uuid(mission_id):
        return f"{base_url}/missions/{mission_id}"
    if kind == ev.NOTIFY_TASK_FAILED and is_uuid(task_id):
        return f"{base_url}/tasks/{task_id}"
    return f"{base_url}/"


def idempotency_key(town: str, event_id: str, target: str) -> str:
    """The same for every attempt of one event to one target, and different for any other pair
    (an event id is unique in its town's stream; names hold no ``:``)."""
    return f"{town}:{event_id}:{target}"


def one_line(value, max_chars: int = TEXT_MAX_CHARS) -> str:
    """``value``'s first line, whitespace collapsed, at most ``max_chars`` (cut with ``…``)."""
    lines = str(value or "").strip().splitlines()
    first = (
        " ".join("".join(c if c.isprintable() else " " for c in lines[0]).split()) if lines else ""
    )
    return first if len(first) <= max_chars else first[: max_chars - 1] + "…"


def _short(value) -> str:
    return str(value or "?")[:SHORT_ID_CHARS]


def _mission(doc: Mapping) -> str:
    """``Mission 1a2b3c4d`` and, when the document carries it, ``"its title"``."""
    title = one_line(doc.get("mission_title"), TITLE_MAX_CHARS)
    return f"Mission {_short(doc.get('mission_id'))}" + (f' "{title}"' if title else "")


def _items(doc: Mapping) -> str:
    """`` (4 items)`` or `` (3/4 items)`` from a mission event's ``items_done``/``items_total``."""
    done, total = doc.get("items_done"), doc.get("items_total")
    if not isinstance(done, int) or not isinstance(total, int) or total <= 0:
        return ""
    items = "item" if total == 1 else "items"
    return f" ({total} {items})" if done == total else f" ({done}/{total} {items})"


def text(kind: str, doc: Mapping) -> str:
    """The one-line summary: ``Mission 1a2b3c4d "its title" completed (4 items)`` (the title
    when the document carries ``mission_title``), ``Mission … needs help:
    <reason>``, ``Task … failed after 3 attempts: <reason>``, ``Worker <name> unhealthy on
    outpost <x>: <reason>``.

    The detail is the event's ``reason`` (first line); a mission's item count comes from its
    ``items_done`` and ``items_total``, a task's attempts from ``attempt`` when the event has
    it. An ``agent_unhealthy`` event's message is already the sentence (townhall's
    report route writes it, with the agent's name and outpost); without one, the agent id and
    reason are used. Other documents (``tt notify test``) read as their message.
    """
    reason = one_line(doc.get("reason"))
    why = f": {reason}" if reason else ""
    mission, task = _mission(doc), _short(doc.get("task_id"))
    if kind == ev.NOTIFY_MISSION_COMPLETED:
        line = f"{mission} completed{_items(doc)}{why}"
    elif kind == ev.NOTIFY_MISSION_FAILED:
        line = f"{mission} failed{_items(doc)}{why}"
    elif kind == ev.NOTIFY_MISSION_HELP:
        line = f"{mission} needs help{why}"
    elif kind == ev.NOTIFY_TASK_FAILED:
        attempts = doc.get("attempt")
        after = ""
        if isinstance(attempts, int) and not isinstance(attempts, bool) and attempts > 0:
            after = f" after {attempts} attempt{'s' if attempts != 1 else ''}"
        if after:  # the count is said once, not again by the reason
            reason = _ATTEMPTS_SAID.sub("", reason)
        line = f"Task {task} failed{after}" + (f": {reason}" if reason else "")
    elif kind == ev.NOTIFY_WORKER_UNHEALTHY and doc.get("message"):
        line = str(doc["message"])
    elif kind == ev.NOTIFY_WORKER_UNHEALTHY:
        line = f"Worker {_short(doc.get('agent_id'))} unhealthy{why}"
    else:
        line = str(doc.get("message") or doc.get("reason") or kind.replace("_", " "))
    return one_line(line)
