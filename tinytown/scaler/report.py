"""What a pass did, as data: the ``Report`` that ``--json`` prints as one line per pass, with the
plan described in it. ``docs/scaler.md`` shows a line and names every field.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from tinytown.scaler.containers import Worker
from tinytown.scaler.epoch import iso
from tinytown.scaler.errors import ExitStatus
from tinytown.scaler.policy import Plan
from tinytown.scaler.wire import Signal


@dataclass
class Report:
    """What a pass did; printed as one JSON line with --json."""

    exit_status: ExitStatus = ExitStatus.SUCCESS
    town: str | None = None
    error: str | None = None
    signal: Signal | None = None
    plan: dict[str, Any] | None = None
    actions: list[dict[str, Any]] = field(default_factory=list)
    outposts: list[dict[str, Any]] = field(default_factory=list)
    cost: dict[str, Any] | None = None
    workers: int | None = None  # this town's worker containers the pass saw

    def to_json(self, now: float, dry_run: bool) -> dict[str, Any]:
        return {
            "ts": iso(now),
            "town": self.town,
            "dry_run": dry_run,
            "exit_code": int(self.exit_status),
            "error": self.error,
            "signal": dataclasses.asdict(self.signal) if self.signal else None,
            "plan": self.plan,
            "actions": self.actions,
            "outposts": self.outposts,
            "cost": self.cost,
        }


def worker_ref(w: Worker) -> dict[str, Any]:
    """A container as reports and actions name it."""
    return {
        "container_id": w.container_id[:12],
        "name": w.name,
        "outpost": w.outpost,
        "agent_id": w.agent_id,
    }


def describe(plan: Plan) -> dict[str, Any]:
    """The plan as the ``plan`` object of a ``--json`` line."""
    return {
        "target": plan.target,
        "live": plan.live,
        "shortfall": plan.shortfall,
        "surplus": plan.surplus,
        "starts": list(plan.placement.outposts),
        "unplaced": plan.placement.unplaced,
        "unplaced_reason": plan.placement.reason,
        "scale_down": {
            "allowed": plan.gate.allowed,
            "reason": plan.gate.reason,
            "surplus_passes": plan.gate.surplus_passes,
        },
        "drains": [worker_ref(w) for w in plan.drains],
        "restarts": [worker_ref(w) for w in plan.restarts],
        "give_up": [{**worker_ref(w), "reason": r} for w, r in plan.give_up],
        "removals": [worker_ref(w) for w in plan.removals],
        "health_checked": plan.agents_known,
        "evidence_inconsistent": list(plan.conflicts),
        "unknown": [
            {
                **worker_ref(w),
                "health": w.health,
                "evidence": plan.verdicts[w.container_id].unknown,
                "reason": plan.verdicts[w.container_id].reason,
            }
            for w in plan.unknown
        ],
    }
