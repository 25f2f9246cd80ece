"""The town's counts in one round trip, for ``/api/scaling``, ``/ready`` and ``/metrics``.

Every count comes from an index: ``ZCARD`` of the per-state task sets, ``LLEN`` of the backlog,
the ``XPENDING`` summary of the shared docket and ``ZCOUNT`` of the per-state agent zsets on
either side of the Redis clock (live and dead agents) — one pipelined round trip whose cost does
not depend on how many tasks are queued. The only per-record reads are of live idle agents'
``last_active_at`` (O(live idle agents), in the same round trip). No ``KEYS``, no ``SCAN``.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from tinytown.core import defaults
from tinytown.core.keys import Keys
from tinytown.core.liveness import AgentCounts, parse_counts
from tinytown.core.states import BACKLOG_STATE, TASK, TASK_RUNNING, TASK_STATES
from tinytown.store.agents import AgentStore
from tinytown.store.scripts import execute_pipelined

ASSIGNED = TASK["assign"].target  # aimed at one agent, not started


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
        return max(self.tasks[TASK_RUNNING], self.docket_held)

    @property
    def pending_tasks(self) -> int:
        """Tasks waiting for a worker, minus those already counted as held (never below 0)."""
        held_not_running = max(0, self.docket_held - self.tasks[TASK_RUNNING])
        return max(0, self.tasks[BACKLOG_STATE] + self.tasks[ASSIGNED] - held_not_running)


def _pending_count(result) -> int:
    if isinstance(result, redis.ResponseError):
        text = str(result)
        if "NOGROUP" in text or "no such key" in text:
            return 0
        raise result
    if isinstance(result, Exception):
        raise result
    return int(result.get("pending", 0) if isinstance(result, dict) else result[0] or 0)


def town_counts(
    r: redis.Redis, keys: Keys, agents: AgentStore, *, idle_times: bool = False
) -> TownCounts:
    """Every count in one pipelined round trip: tasks by state (``ZCARD``), agents by state, live
    and dead (one script, ``ZCOUNT`` either side of the Redis clock), the backlog, active missions
    and the docket's held entries. With ``idle_times`` also live idle agents' last activity
    (O(live idle agents), in the same script)."""
    k = keys

    def build(pipe):
        for state in TASK_STATES:
            pipe.zcard(k.tasks_in_state(state))
        agents.queue_counts(pipe, idle_times=idle_times)
        pipe.llen(k.backlog)
        pipe.scard(k.missions_active)
        pipe.xpending(k.docket, defaults.DOCKET_GROUP)

    out = execute_pipelined(r, build, agents.scripts, raise_on_error=False)
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
