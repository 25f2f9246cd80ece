"""Liveness as data: a heartbeat (an agent's own interval), and agents counted by state, live
and dead, by the Redis clock (the reply of the store's counting script, parsed). Pure.
"""

from __future__ import annotations

from dataclasses import dataclass

from tinytown.core import defaults
from tinytown.core.clock import parse_rfc3339
from tinytown.core.states import ACTIVE_AGENT_STATES, AGENT_STATES


@dataclass(frozen=True)
class Beat:
    """A heartbeat: the agent's own interval, and how long ago it happened (tests backdate one)."""

    interval_secs: int
    age_ms: int = 0

    @property
    def dead_after_ms(self) -> int:
        return self.interval_secs * defaults.DEAD_AFTER_HEARTBEATS * 1000


@dataclass(frozen=True)
class AgentCounts:
    """Agents per state by the Redis clock: ``live`` (terminal states: all of them), ``dead``
    (active states only: past their window), and live idle agents' last activity."""

    live: dict[str, int]
    dead: dict[str, int]
    idle_last_active: list
    now_ms: int

    @property
    def dead_total(self) -> int:
        return sum(self.dead.values())

    @property
    def live_active(self) -> int:
        """Agents whose worker runs and beats: live in an active state."""
        return sum(self.live[s] for s in ACTIVE_AGENT_STATES)


def parse_counts(reply: list) -> AgentCounts:
    live, dead, times, now_ms = reply
    live_by, dead_by = {}, {}
    for state, n_live, n_dead in zip(AGENT_STATES, live, dead):
        if state in ACTIVE_AGENT_STATES:
            live_by[state], dead_by[state] = int(n_live), int(n_dead)
        else:  # terminal states are what they say, beating or not
            live_by[state] = int(n_live) + int(n_dead)
    return AgentCounts(live_by, dead_by, [parse_rfc3339(t) for t in times], int(now_ms))
