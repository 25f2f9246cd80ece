"""Worker containers as Docker reports them, reduced to a plain ``Worker`` record, and the labels
by which the scaler knows its own.

Containers are found by their labels only, never by name: ``tinytown.town``,
``tinytown.role=agent-worker``, ``tinytown.outpost`` and ``tinytown.agent_id`` (a fresh UUID per
container, its ``TINYTOWN_AGENT_ID``), plus ``tinytown.started_at`` and
``tinytown.cost_per_hour`` for age and cost. Pure: attributes in, records out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tinytown.scaler.epoch import epoch_secs
from tinytown.scaler.model import Outpost

ROLE = "agent-worker"
ROLE_WORKSPACE = "workspace"  # the shared workspace volume
ROLE_WORKSPACE_INIT = "workspace-init"  # the one-off container that hands it to the image's user
LABEL_TOWN = "tinytown.town"
LABEL_ROLE = "tinytown.role"
LABEL_OUTPOST = "tinytown.outpost"
LABEL_AGENT_ID = "tinytown.agent_id"
LABEL_STARTED_AT = "tinytown.started_at"
LABEL_COST_PER_HOUR = "tinytown.cost_per_hour"
LIVE_STATUSES = frozenset({"created", "running", "restarting", "paused"})
HEALTH_STATUSES = frozenset({"starting", "healthy", "unhealthy"})  # Docker's; None: no healthcheck
EXITED_STATUSES = frozenset({"exited", "dead"})


@dataclass(frozen=True)
class Worker:
    """One worker container as Docker reports it, reduced to what the policy needs."""

    container_id: str
    name: str
    outpost: str
    agent_id: str | None
    status: str  # Docker's: created, running, restarting, paused, exited, dead, removing
    started_at: float | None  # from the tinytown.started_at label, else the creation time
    cost_per_hour: float = 0.0
    finished_at: float | None = None  # known only after a full inspect
    exit_code: int | None = None  # known only after a full inspect of an exited container
    ran_secs: float | None = None  # its last run, start to finish (full inspect only)
    health: str | None = None  # Docker's: starting, healthy, unhealthy; None without a healthcheck

    @property
    def live(self) -> bool:
        return self.status in LIVE_STATUSES

    def age_secs(self, now: float) -> float | None:
        return None if self.started_at is None else max(0.0, now - self.started_at)

    def cost_so_far(self, now: float) -> float:
        if self.started_at is None:
            return 0.0
        end = now if self.live or self.finished_at is None else self.finished_at
        return max(0.0, end - self.started_at) / 3600.0 * self.cost_per_hour


def worker_from_attrs(attrs: Mapping[str, Any], outpost: Outpost) -> Worker:
    """Build a Worker from ``docker ps`` (sparse) or ``docker inspect`` (full) attributes."""
    labels = attrs.get("Labels") or (attrs.get("Config") or {}).get("Labels") or {}
    state = attrs.get("State")
    status = state.get("Status", "") if isinstance(state, dict) else str(state or "")
    name = attrs.get("Name") or ((attrs.get("Names") or [""])[0])
    created = attrs.get("Created")
    created_at = (
        float(created)
        if isinstance(created, (int, float))
        else (epoch_secs(created) if isinstance(created, str) else None)
    )
    started_at = epoch_secs(labels.get(LABEL_STARTED_AT, "")) or created_at
    finished_at = exit_code = ran_secs = None
    if isinstance(state, dict):
        finished = epoch_secs(state.get("FinishedAt") or "")
        finished_at = finished if finished and finished > 0 else None  # 0001-01-01 = never
        last_start = epoch_secs(state.get("StartedAt") or "")
        if status in EXITED_STATUSES and isinstance(state.get("ExitCode"), int):
            exit_code = state["ExitCode"]
            if finished_at and last_start and last_start > 0:
                ran_secs = max(0.0, finished_at - last_start)
    try:
        cost = float(labels.get(LABEL_COST_PER_HOUR, outpost.cost_per_hour))
    except ValueError:
        cost = outpost.cost_per_hour
    return Worker(
        attrs.get("Id", ""),
        name.lstrip("/"),
        labels.get(LABEL_OUTPOST, outpost.name),
        labels.get(LABEL_AGENT_ID) or None,
        status,
        started_at,
        cost,
        finished_at,
        exit_code,
        ran_secs,
        container_health(attrs),
    )


_HEALTH_IN_PS_STATUS = re.compile(r"\((healthy|unhealthy|health: starting)\)\s*$")


def container_health(attrs: Mapping[str, Any]) -> str | None:
    """Docker's health status of a container (``starting``, ``healthy`` or ``unhealthy``), from
    ``docker inspect`` (State.Health) or ``docker ps`` (``Up 5 minutes (healthy)``); None when
    it has no healthcheck."""
    state = attrs.get("State")
    if isinstance(state, dict):
        health = state.get("Health")
        status = health.get("Status") if isinstance(health, dict) else None
        return status if status in HEALTH_STATUSES else None
    match = _HEALTH_IN_PS_STATUS.search(str(attrs.get("Status") or ""))
    if not match:
        return None
    return "starting" if match.group(1) == "health: starting" else match.group(1)
