"""Our task or mission, as its operation returns it, → an A2A Task.

An A2A Task's id is our task's or mission's id. A task's ``result`` is what its worker reported:
a completed task's artifact ``result`` (text), a failed or cancelled one's status message (the
reason). A mission's artifacts are its finished work items' results, one each; its summary
(counts, progress) is in the metadata. The whole record is in ``metadata.tinytown``, so nothing
REST shows is lost.
"""

from __future__ import annotations

from tinytown.a2a.messages import context_of
from tinytown.a2a.wire import (
    CANCELED,
    COMPLETED,
    FAILED,
    INPUT_REQUIRED,
    SUBMITTED,
    WORKING,
    Dialect,
)
from tinytown.core.missions import FORCED_STOP_REASON
from tinytown.core.states import (
    BACKLOG_STATE,
    MISSION,
    MISSION_DEFAULT_STATE,
    TASK,
    TASK_RUNNING,
    WORK,
)

# Our task states → A2A's: a queued task (for any worker, or aimed at one) is submitted.
TASK_STATE = {
    BACKLOG_STATE: SUBMITTED,
    TASK["assign"].target: SUBMITTED,
    TASK_RUNNING: WORKING,
    TASK["complete"].target: COMPLETED,
    TASK["fail"].target: FAILED,
    TASK["cancel"].target: CANCELED,
}

# Mission states → A2A's: a blocked mission (stopped, paused, or waiting for help) needs someone.
MISSION_STATE = {
    MISSION_DEFAULT_STATE: SUBMITTED,
    MISSION["start"].target: WORKING,
    MISSION["stop"].target: INPUT_REQUIRED,
    MISSION["complete"].target: COMPLETED,
    MISSION["fail"].target: FAILED,
}

# A2A states whose status message is the record's reason.
REASONED = (FAILED, CANCELED, INPUT_REQUIRED)


def task_view(d: Dialect, task: dict, *, with_artifacts: bool = True) -> dict:
    """``task``: the task operation's JSON (REST's shape, state capitalised)."""
    ours = str(task.get("state", "")).lower()
    state = TASK_STATE.get(ours, SUBMITTED)
    result = task.get("result") or ""
    artifacts = []
    if state == COMPLETED and result and with_artifacts:
        artifacts.append(
            d.artifact("result", "result", [d.text_part(result)], "What the worker reported.")
        )
    return d.task(
        task["id"],
        context_of(task.get("tags")) or task["id"],
        state,
        timestamp=task.get("updated_at") or "",
        message=result if state in REASONED else "",
        artifacts=artifacts,
        metadata={"tinytown": {"kind": "task", **task}},
    )


def mission_view(d: Dialect, status: dict, *, with_artifacts: bool = True) -> dict:
    """``status``: ``mission.get_status``'s answer (the record, its work items, its summary)."""
    mission = status["mission"]
    items = status.get("work_items") or []
    ours = mission.get("state", MISSION_DEFAULT_STATE)
    reason = mission.get("blocked_reason") or ""
    state = MISSION_STATE.get(ours, SUBMITTED)
    if state == FAILED and reason == FORCED_STOP_REASON:
        state = CANCELED  # stopped by force: what CancelTask does to a mission
    artifacts = []
    done = WORK["complete"].target
    for item in items if with_artifacts else ():
        if item.get("status") == done and item.get("result"):
            artifacts.append(
                d.artifact(
                    str(item.get("id")),
                    str(item.get("title") or item.get("key") or item.get("id")),
                    [d.text_part(str(item["result"]))],
                    f"Work item {item.get('key') or item.get('id')}: what its worker reported.",
                )
            )
    context = next((c for c in (context_of(i.get("tags")) for i in items) if c), None)
    return d.task(
        mission["id"],
        context or mission["id"],
        state,
        timestamp=mission.get("updated_at") or "",
        message=reason if state in REASONED else "",
        artifacts=artifacts,
        metadata={
            "tinytown": {
                "kind": "mission",
                "mission": mission,
                "summary": status.get("summary") or {},
                "work_items": [_item_row(i) for i in items],
            }
        },
    )


def _item_row(item: dict) -> dict:
    """A work item in brief (its result is an artifact)."""
    keys = ("id", "key", "title", "kind", "status", "task_id", "depends_on_keys", "reason")
    return {k: item.get(k) for k in keys if k in item}
