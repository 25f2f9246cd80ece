"""The scaling signal and the dispatcher's status, from the town's counts
(:mod:`tinytown.store.counts`: one round trip, O(1) in the queue's length)."""

from __future__ import annotations

from tinytown.core import defaults
from tinytown.core.clock import now, parse_rfc3339
from tinytown.core.scaling import ScalingInput, scaling_signal
from tinytown.store import Town


def scaling(town: Town) -> dict:
    """The ``/api/scaling`` document for ``town`` (one Redis round trip)."""
    cfg = town.config
    counts = town.counts(idle_times=cfg.agent.idle_timeout_secs > 0)
    return scaling_signal(
        ScalingInput(
            town=cfg.name,
            now=now(),
            pending_tasks=counts.pending_tasks,
            in_flight_tasks=counts.in_flight_tasks,
            agents_by_state=counts.agents.live,
            dead_agents=counts.agents.dead_total,
            idle_last_active=counts.agents.idle_last_active,
            max_agents=cfg.max_agents,
            idle_timeout_secs=cfg.agent.idle_timeout_secs,
        )
    )


def dispatcher_status(town: Town) -> str:
    """``idle`` (no active mission), ``running`` (one ticked within 90 s) or ``stalled``.

    Reads the active-missions set, not every mission ever made, so a stopped mission does not
    keep readiness at ``stalled`` (an upstream quirk).
    """
    active = town.missions.active()
    if not active:
        return "idle"
    current = now()
    live = False
    for mission in active:
        if mission.terminal:
            continue
        live = True
        tick = parse_rfc3339(mission.data.get("dispatcher_last_tick_at"))
        if tick is not None and (current - tick).total_seconds() <= defaults.DISPATCHER_FRESH_SECS:
            return "running"
    return "stalled" if live else "idle"
