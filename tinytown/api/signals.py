"""The scaling signal and the dispatcher's status, from the town's counts
(:mod:`tinytown.store.counts`: one round trip, O(1) in the queue's length).

A process keeps its last signal (:class:`SignalCache`) for as long as its event pump
(:mod:`tinytown.store.pump`) has seen no event: every change the signal counts appends an event
in the same transaction, so an unchanged feed means an unchanged signal, and a long-poll that
waits costs Redis nothing. An answer given at once first asks whether the pump has every event
written so far (one command); if not, a write made just before the request has not reached the
process yet, and the signal is read from Redis, so a read after a write always sees it. The
cache is a convenience, never an authority: without a healthy pump, or after
``SCALING_CACHE_MAX_SECS``, the signal is read from Redis again.
"""

from __future__ import annotations

import threading
import time

from tinytown.core import defaults
from tinytown.core.clock import now, parse_rfc3339, to_rfc3339
from tinytown.core.scaling import ScalingInput, scaling_signal
from tinytown.store import Town
from tinytown.store.pump import EventPump


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


class SignalCache:
    """One process's latest scaling signal, valid while its pump's ``seq`` stays the same."""

    def __init__(self, town: Town, pump: EventPump | None):
        self.town, self.pump = town, pump
        self.lock = threading.Lock()
        self.doc: dict | None = None
        self.seq = -1
        self.at = 0.0

    def current(self, *, confirm: bool = False) -> tuple[dict, int]:
        """The signal now, and the pump ``seq`` it reflects (-1 without a pump). ``confirm``: the
        kept signal only if the pump has every event written before this call (one command), so
        that the answer counts every write made before the request."""
        pump = self.pump
        if pump is None or not pump.healthy:
            return scaling(self.town), -1
        # read before Redis: an event during the read makes the next call read
        seq, caught_up = pump.caught_up() if confirm else (pump.seq, True)
        with self.lock:
            fresh = time.monotonic() - self.at < defaults.SCALING_CACHE_MAX_SECS
            if caught_up and self.doc is not None and self.seq == seq and fresh:
                return {**self.doc, "timestamp": to_rfc3339(now())}, seq
        doc = scaling(self.town)
        with self.lock:
            self.doc, self.seq, self.at = doc, seq, time.monotonic()
        return doc, seq


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
