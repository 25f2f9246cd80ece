"""Reading the town's counts from Redis for ``/api/scaling``, ``/ready`` and ``/metrics``.

Every count comes from an index: ``ZCARD`` of the per-state task sets, ``LLEN`` of the backlog,
the ``XPENDING`` summary of the shared docket and ``ZCOUNT`` of the per-state agent zsets on
either side of the Redis clock (live and dead agents) — one pipelined round trip whose cost does
not depend on how many tasks are queued. The only per-record reads are of live idle agents'
``last_active_at`` (O(live idle agents), in the same round trip). No ``KEYS``, no ``SCAN``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis

from tinytown.core import defaults
from tinytown.core.states import TASK_STATES
from tinytown.core.clock import now, parse_rfc3339
from tinytown.core.scaling import ScalingInput, scaling_signal
from tinytown.store import Town
from tinytown.store.agents import AgentCounts, parse_counts
from tinytown.store.scripts import execute_pipelined


@dataclass(frozen=True)
class TownCounts:
    tasks: dict[str, int]  # by state
    agents: AgentCounts  # by state, live and dead (Redis clock)
    backlog: int
    docket_held: int  # entries delivered to a worker and not yet acknowledged
    missions_active: int

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
    """Every count in one pipelined round trip: tasks by state (``ZCARD``), agents by state, live
    and dead (one script, ``ZCOUNT`` either side of the Redis clock), the backlog, active missions
    and the docket's held entries. With ``idle_times`` also live idle agents' last activity
    (O(live idle agents), in the same script)."""
    k = town.keys

    def build(pipe):
        for state in TASK_STATES:
            pipe.zcard(k.tasks_in_state(state))
        town.agents.queue_counts(pipe, idle_times=idle_times)
        pipe.llen(k.backlog)
        pipe.scard(k.missions_active)
        pipe.xpending(k.docket, defaults.DOCKET_GROUP)

    out = execute_pipelined(town.redis, build, town.agents.scripts, raise_on_error=False)
    for value in out[:-1]:
        if isinstance(value, Exception):
            raise value
    n_t = len(TASK_STATES)
    return TownCounts(
        tasks=dict(zip(TASK_STATES, out[:n_t])),
        agents=parse_counts(out[n_t]),
        backlog=out[n_t + 1],
        missions_active=out[n_t + 2],
        docket_held=_pending_count(out[-1]),
    )


def scaling(town: Town) -> dict:
    """The ``/api/scaling`` document for ``town`` (one Redis round trip)."""
    cfg = town.config
    counts = town_counts(town, idle_times=cfg.agent.idle_timeout_secs > 0)
    return scaling_signal(
        ScalingInput(
            town=cfg.name, now=now(), pending_tasks=counts.pending_tasks, in_flight_tasks=counts.in_flight_tasks,
            agents_by_state=counts.agents.live, dead_agents=counts.agents.dead_total,
            idle_last_active=counts.agents.idle_last_active, max_agents=cfg.max_agents,
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
    from tinytown.store.missions import Mission

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
