"""Reading the town's counts from Redis for ``/api/scaling``, ``/ready`` and ``/metrics``.

Every count comes from an index: ``ZCARD`` of the per-state task sets, ``LLEN`` of the backlog,
the ``XPENDING`` summary of the shared docket and ``SCARD`` of the per-state agent sets — one
pipelined round trip whose cost does not depend on how many tasks are queued. The only
per-record reads are of idle agents' ``last_active_at`` (``SORT … BY nosort GET``: O(idle
agents), in the same round trip). No ``KEYS``, no ``SCAN``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import redis

from .. import defaults
from ..keys import AGENT_STATES, TASK_STATES
from ..records import now, parse_rfc3339
from ..scaling import ScalingInput, scaling_signal
from ..store import Town


@dataclass(frozen=True)
class TownCounts:
    tasks: dict[str, int]  # by state
    agents: dict[str, int]  # by state
    backlog: int
    docket_held: int  # entries delivered to a worker and not yet acknowledged
    missions_active: int
    idle_last_active: list = field(default_factory=list)  # of idle agents, when asked for

    @property
    def in_flight_tasks(self) -> int:
        """Tasks a worker holds: running ones, or more if more docket entries are held.

        An entry held without a running task is one a worker took (and maybe then died with)
        before its record moved; it counts here until it is acknowledged or reclaimed.
        """
        return max(self.tasks["running"], self.docket_held)

    @property
    def pending_tasks(self) -> int:
        """Tasks waiting for a worker, minus those already counted as held (never below 0)."""
        held_not_running = max(0, self.docket_held - self.tasks["running"])
        return max(0, self.tasks["pending"] + self.tasks["assigned"] - held_not_running)


def _pending_count(result) -> int:
    if isinstance(result, redis.ResponseError):
        text = str(result)
        if "NOGROUP" in text or "no such key" in text:
            return 0
        raise result
    if isinstance(result, Exception):
        raise result
    return int(result.get("pending", 0) if isinstance(result, dict) else result[0] or 0)


def town_counts(town: Town, *, idle_times: bool = False) -> TownCounts:
    """Every count in one pipelined round trip; with ``idle_times`` also idle agents' activity.

    Idle agents' ``last_active_at`` come from ``SORT agents:state:idle BY nosort GET …`` in the
    same pipeline: O(idle agents), and no extra round trip.
    """
    k = town.keys
    pipe = town.redis.pipeline(transaction=False)
    for state in TASK_STATES:
        pipe.zcard(k.tasks_in_state(state))
    for state in AGENT_STATES:
        pipe.scard(k.agents_in_state(state))
    pipe.llen(k.backlog)
    pipe.scard(k.missions_active)
    if idle_times:
        pipe.sort(k.agents_in_state("idle"), by="nosort", get=[k.agent_field("last_active_at"), k.agent_field("created_at")])
    pipe.xpending(k.docket, defaults.DOCKET_GROUP)
    out = pipe.execute(raise_on_error=False)
    for value in out[:-1]:
        if isinstance(value, Exception):
            raise value
    n_t, n_a = len(TASK_STATES), len(AGENT_STATES)
    times = []
    if idle_times:
        flat = out[n_t + n_a + 2]
        times = [parse_rfc3339(last or created) for last, created in zip(flat[::2], flat[1::2])]
    return TownCounts(
        tasks=dict(zip(TASK_STATES, out[:n_t])),
        agents=dict(zip(AGENT_STATES, out[n_t : n_t + n_a])),
        backlog=out[n_t + n_a],
        missions_active=out[n_t + n_a + 1],
        docket_held=_pending_count(out[-1]),
        idle_last_active=times,
    )


def scaling(town: Town) -> dict:
    """The ``/api/scaling`` document for ``town`` (one Redis round trip)."""
    cfg = town.config
    counts = town_counts(town, idle_times=cfg.agent.idle_timeout_secs > 0)
    return scaling_signal(
        ScalingInput(
            town=cfg.name, now=now(), pending_tasks=counts.pending_tasks, in_flight_tasks=counts.in_flight_tasks,
            agents_by_state=counts.agents, idle_last_active=counts.idle_last_active, max_agents=cfg.max_agents,
            idle_timeout_secs=cfg.agent.idle_timeout_secs,
        )  # fmt: skip
    )


def ping_ms(town: Town) -> float:
    start = time.perf_counter()
    if not town.redis.ping():
        raise redis.ConnectionError("PING did not answer PONG")
    return (time.perf_counter() - start) * 1000


def dispatcher_status(town: Town) -> str:
    """``idle`` (no active mission), ``running`` (one ticked within 90 s) or ``stalled``.

    Reads the active-missions set, not every mission ever made, so a stopped mission does not
    keep readiness at ``stalled`` (an upstream quirk).
    """
    ids = sorted(town.redis.smembers(town.keys.missions_active))
    if not ids:
        return "idle"
    docs = town.redis.mget([town.keys.mission(i) for i in ids])
    from ..store.missions import Mission

    current = now()
    live = False
    for raw in docs:
        mission = Mission.decode(raw)
        if mission is None or mission.terminal:
            continue
        live = True
        tick = parse_rfc3339(mission.data.get("dispatcher_last_tick_at"))
        if tick is not None and (current - tick).total_seconds() <= defaults.DISPATCHER_FRESH_SECS:
            return "running"
    return "stalled" if live else "idle"
