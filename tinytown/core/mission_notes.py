"""What a note to a mission asks for (upstream §8.6's control messages), read from its text.

``resume`` / ``retry`` …: run again (a failed mission's failed items get their attempts again);
``pause`` / ``hold`` …: queue nothing new until resumed; ``redirect [<item key>] to <agent>
[reason]`` (also ``reassign``, ``reroute``, ``rebind``): move an item's work to that agent;
anything else is kept in the log as a note. Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tinytown.core import events as ev
from tinytown.core.states import LIVE_WORK_STATUSES, WORK, WORK_IN_FLIGHT_STATUSES

RESUME, PAUSE, REDIRECT, NOTE = "resume", "pause", "redirect", "note"

_RESUME = re.compile(r"(resume|retry)\b", re.IGNORECASE)
_PAUSE = re.compile(r"(pause|hold)\b", re.IGNORECASE)
_REDIRECT = re.compile(
    r"(redirect|reassign|reroute|rebind)\s+(?:(?P<item>\S+)\s+)?to\s+(?P<agent>\S+)(?:\s+(?P<why>.*))?",
    re.IGNORECASE | re.DOTALL,
)


@dataclass(frozen=True)
class NoteAction:
    action: str  # RESUME | PAUSE | REDIRECT | NOTE
    item: str | None = None  # a work item's key (redirect), None = the one in flight
    agent: str | None = None  # an agent reference (redirect)
    reason: str = ""


def read_note(body: str) -> NoteAction:
    text = body.strip()
    if _RESUME.match(text):
        return NoteAction(RESUME)
    if _PAUSE.match(text):
        return NoteAction(PAUSE, reason=text)
    if m := _REDIRECT.match(text):
        return NoteAction(
            REDIRECT, m.group("item"), m.group("agent"), (m.group("why") or "").strip()
        )
    return NoteAction(NOTE, reason=text)


def _requeue_event(mission_id: str, item: dict, old: str, message: str, ts: str) -> dict:
    return ev.event(
        ev.MISSION_WORK_REQUEUED,
        f"work item {item['key']}: {message}",
        ts,
        mission_id=mission_id,
        work_item_id=item["id"],
        key=item["key"],
        old_state=old,
        new_state=item["status"],
    )


def retry_failed(mission_id: str, items: list[dict], ts: str) -> tuple[dict, list[dict]]:
    """Failed items back to ``pending`` with their attempts again (a new task, review round 0).
    Returns the changed items by id and their events."""
    changed, events = {}, []
    for item in items:
        if not WORK["retry"].allows(item["status"]):
            continue
        old = item["status"]
        item = {**item, "status": WORK["retry"].target, "reason": None, "task_id": None}
        item.update(stage=None, round=0, dispatches=int(item.get("dispatches") or 0) + 1)
        item["updated_at"] = item["progress_at"] = ts
        changed[item["id"]] = item
        events.append(_requeue_event(mission_id, item, old, "retried by a note", ts))
    return changed, events


def redirect(
    mission_id: str, items: list[dict], key: str | None, agent_id: str, ts: str
) -> tuple[dict, list[dict], str | None]:
    """The item ``key`` names (or the one item in flight) queued again for ``agent_id``.
    Returns the changed item by id, its event, and the task to cancel (its old one, if live)."""
    live = [i for i in items if i["status"] in LIVE_WORK_STATUSES]
    chosen = (
        [i for i in live if i["key"] == key]
        if key
        else [i for i in live if i["status"] in WORK_IN_FLIGHT_STATUSES]
    )
    if len(chosen) != 1:
        what = (
            f"no unfinished work item {key!r}"
            if key
            else (f"{len(chosen)} work items in flight; name one: redirect <item key> to <agent>")
        )
        raise ValueError(what)
    item, old = dict(chosen[0]), chosen[0]["status"]
    cancel = item.get("task_id") if old in WORK_IN_FLIGHT_STATUSES else None
    if WORK["requeue"].allows(old):
        item["status"] = WORK["requeue"].target
    item.update(assign_to=agent_id, task_id=None, stage=None)
    item["dispatches"] = int(item.get("dispatches") or 0) + 1
    item["updated_at"] = item["progress_at"] = ts
    event = _requeue_event(mission_id, item, old, f"redirected to agent {agent_id}", ts)
    return {item["id"]: item}, [event], cancel
