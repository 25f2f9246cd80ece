"""The scaling signal (upstream §10.3): plain data in, the ``/api/scaling`` document out.

Pure: townhall reads the counts from Redis (:mod:`tinytown.api.signals`) and hands them here.

- ``pending_tasks``: tasks waiting for a worker (``pending`` + ``assigned`` but not started).
- ``in_flight_tasks``: tasks a worker holds, including one held by a worker that died (its
  docket entry is still unacknowledged).
- ``desired_agents`` = min(pending + in flight, ``max_agents``).
- Agents count only while alive: an agent in an active state whose heartbeat is older than its
  own dead-after window (``DEAD_AFTER_HEARTBEATS`` × its ``heartbeat_interval_secs``) is counted
  in ``dead_agents`` and nowhere else — not active, idle or busy — so a town whose only agents
  died with work queued asks for workers (``scale_up``).

Recommendation, first match wins (upstream order):

1. ``scale_to_zero`` — desired is 0, nothing pending, nothing in flight, and every active agent
   is idle past ``idle_timeout_secs`` (vacuously true with none; with ``idle_timeout_secs = 0``
   only when no agent is active). Never while anything is pending or in flight.
2. ``scale_up`` — desired > active agents.
3. ``scale_down`` — desired < active agents and nothing pending.
4. ``steady``.

``version`` (16 hex digits) changes whenever any other field but ``timestamp`` does: a client
that long-polls passes the last one it saw, and is answered when it differs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from tinytown.core.clock import to_rfc3339
from tinytown.core.states import (
    ACTIVE_AGENT_STATES,
    AGENT_COLD_STATE,
    AGENT_IDLE_STATE,
    AGENT_WORKING_STATE,
)

RECOMMENDATIONS = ("scale_up", "steady", "scale_down", "scale_to_zero")
SCALE_DOWN_RECOMMENDATIONS = ("scale_down", "scale_to_zero")  # a surplus of workers may go


@dataclass(frozen=True)
class ScalingInput:
    town: str
    now: datetime
    pending_tasks: int
    in_flight_tasks: int
    agents_by_state: Mapping[str, int]  # live agents only, per state
    # ``last_active_at`` of each idle agent (None if unknown); only read when it can matter.
    idle_last_active: Iterable[datetime | None]
    max_agents: int
    idle_timeout_secs: int
    dead_agents: int = 0  # in an active state, past their heartbeat window


def all_idle(inp: ScalingInput) -> bool:
    active = sum(inp.agents_by_state.get(s, 0) for s in ACTIVE_AGENT_STATES)
    if inp.idle_timeout_secs == 0:
        return active == 0
    if active != inp.agents_by_state.get(AGENT_IDLE_STATE, 0):
        return False
    for last in inp.idle_last_active:
        if last is None or (inp.now - last).total_seconds() < inp.idle_timeout_secs:
            return False
    return True


def recommend(*, desired: int, active: int, pending: int, in_flight: int, idle: bool) -> str:
    if desired == 0 and pending == 0 and in_flight == 0 and idle:
        return "scale_to_zero"
    if desired > active:
        return "scale_up"
    if desired < active and pending == 0:
        return "scale_down"
    return "steady"


def scaling_signal(inp: ScalingInput) -> dict:
    """The ``/api/scaling`` document: upstream's ten fields plus ``idle_agents``, ``busy_agents``
    and ``dead_agents``."""
    pending, in_flight = max(0, inp.pending_tasks), max(0, inp.in_flight_tasks)
    active = sum(inp.agents_by_state.get(s, 0) for s in ACTIVE_AGENT_STATES)
    desired = min(pending + in_flight, inp.max_agents)
    idle = all_idle(inp)
    doc = {
        "town": inp.town,
        "timestamp": to_rfc3339(inp.now),
        "queue_depth": pending + in_flight,
        "pending_tasks": pending,
        "in_flight_tasks": in_flight,
        "active_agents": active,
        "cold_agents": inp.agents_by_state.get(AGENT_COLD_STATE, 0),
        "desired_agents": desired,
        "max_agents": inp.max_agents,
        "scaling_recommendation": recommend(
            desired=desired, active=active, pending=pending, in_flight=in_flight, idle=idle
        ),
        "idle_agents": inp.agents_by_state.get(AGENT_IDLE_STATE, 0),
        "busy_agents": inp.agents_by_state.get(AGENT_WORKING_STATE, 0),
        "dead_agents": inp.dead_agents,
    }
    doc["version"] = signal_version(doc)
    return doc


def signal_version(doc: Mapping) -> str:
    """What a long-poll (``GET /api/scaling?wait=&since=``) compares: 16 hex digits that change
    whenever any field but the timestamp (and the version itself) does."""
    stable = {k: v for k, v in doc.items() if k not in ("timestamp", "version")}
    return hashlib.sha256(json.dumps(stable, sort_keys=True).encode()).hexdigest()[:16]
