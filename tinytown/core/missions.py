"""Mission documents (upstream §4.7): the record, its JSON timestamps, and the counts and progress
the read routes and ``tt mission status`` show. Pure: no I/O.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tinytown.core.clock import now
from tinytown.core.states import (
    MISSION_DEFAULT_STATE,
    TERMINAL_MISSION_STATES,
    WORK,
    WORK_STATUSES,
)

# A stopped mission's ``blocked_reason`` (A2A reads a forced stop as the mission cancelled).
STOPPED_REASON = "Stopped by user"
FORCED_STOP_REASON = "Stopped by user (forced)"


def json_now(ts: datetime | None = None) -> str:
    """Upstream's JSON-document timestamp form (``…Z``)."""
    return (ts or now()).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Mission:
    data: dict[str, Any]

    @property
    def id(self) -> str:
        return self.data["id"]

    @property
    def state(self) -> str:
        return self.data.get("state", MISSION_DEFAULT_STATE)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_MISSION_STATES

    @classmethod
    def decode(cls, raw: str | None) -> Mission | None:
        if not raw:
            return None
        try:
            data = json.loads(raw)
        except ValueError:
            return None
        return cls(data) if isinstance(data, dict) and "id" in data else None

    def encode(self) -> str:
        return json.dumps(self.data)


def new_mission(
    mission_id: str, objectives: list[dict], policy: dict, title: str | None, ts: str
) -> Mission:
    return Mission(
        {
            "id": mission_id,
            "title": title,
            "objective_refs": objectives,
            "state": MISSION_DEFAULT_STATE,
            "policy": policy,
            "created_at": ts,
            "updated_at": ts,
            "next_wake_at": None,
            "blocked_reason": None,
            "dispatcher_last_tick_at": None,
            "dispatcher_last_progress_at": None,
            "dispatcher_last_help_request_at": None,
            "dispatcher_last_help_request_reason": None,
            "dispatcher_help_request_attempts": 0,
        }
    )


def decode_items(values) -> list[dict]:
    """Stored work items (JSON values), in creation order; unreadable ones skipped."""
    out = []
    for raw in values:
        try:
            item = json.loads(raw)
        except ValueError:
            continue
        if isinstance(item, dict):
            out.append(item)
    return sorted(out, key=lambda i: (i.get("created_at") or "", i.get("order", 0), i.get("id")))


def summary(items: list[dict], watches: list[dict] = ()) -> dict:
    """Counts by status and progress: upstream's summary fields, plus ``failed``, ``counts``
    (every status) and ``progress`` (done / total, 0–1)."""
    counts = {s: 0 for s in WORK_STATUSES}
    for item in items:
        status = item.get("status")
        if status in counts:
            counts[status] += 1
    done = counts[WORK["complete"].target]
    return {
        "total_work_items": len(items),
        "pending": counts["pending"],
        "ready": counts["ready"],
        "running": counts["running"] + counts["assigned"],
        "done": done,
        "blocked": counts["blocked"],
        "failed": counts["failed"],
        "active_watches": sum(1 for w in watches if w.get("status") == "active"),
        "counts": counts,
        "progress": round(done / len(items), 4) if items else 0.0,
        # the finished tasks of its items: seconds their coding CLIs ran, and what that cost
        "worker_secs": round(sum(i.get("worker_secs") or 0 for i in items), 3),
        "cost": round(sum(i.get("cost") or 0 for i in items), 6),
    }
