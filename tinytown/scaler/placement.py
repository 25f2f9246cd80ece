"""Where new workers go: each on the first outpost, in preference order, that is reachable, whose
circuit breaker is closed, that does not hold starts after a crash loop, has room below its
``max_workers`` and keeps the fleet's hourly cost within the cap. Pure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


# --- circuit breaker per outpost --------------------------------------------------------------
@dataclass(frozen=True)
class Breaker:
    failures: int = 0
    open_until: float = 0.0  # epoch seconds; the outpost is skipped before this
    last_error: str | None = None

    def is_open(self, now: float) -> bool:
        return now < self.open_until

    def failed(self, now: float, error: str, backoff_secs: float, max_secs: float) -> Breaker:
        """One more failure: skip the outpost for a backoff that doubles per failure, capped."""
        failures = self.failures + 1
        backoff = min(backoff_secs * 2 ** min(failures - 1, 30), max_secs)
        return Breaker(failures, now + backoff, error)

    def succeeded(self) -> Breaker:
        return Breaker()


# --- where new workers go -------------------------------------------------------------------
@dataclass(frozen=True)
class OutpostView:
    """An outpost as this pass sees it."""

    name: str
    max_workers: int
    cost_per_hour: float
    available: bool  # reachable this pass and its breaker closed
    live: int  # live workers seen on it
    hold: str | None = None  # why it takes no new workers now (a crash loop), if it does not


@dataclass(frozen=True)
class Placement:
    outposts: tuple[str, ...]  # one entry per new worker, in start order
    unplaced: int = 0
    reason: str | None = None  # why some could not be placed


def choose_outposts(
    count: int, outposts: Sequence[OutpostView], hourly_cost: float, cost_cap_hourly: float | None
) -> Placement:
    """Place ``count`` new workers: each on the first outpost, in preference order, that is
    available, below its ``max_workers`` and whose price keeps the fleet within the cost cap."""
    live = {o.name: o.live for o in outposts}
    chosen: list[str] = []
    reason = None
    for _ in range(count):
        pick = None
        blocked_by_cost = False
        held = []
        for o in outposts:
            if o.available and o.hold:
                held.append(f"{o.name} holds starts ({o.hold})")
                continue
            if not o.available or live[o.name] >= o.max_workers:
                continue
            over_cap = (
                cost_cap_hourly is not None
                and hourly_cost + o.cost_per_hour > cost_cap_hourly + 1e-9
            )
            if over_cap:
                blocked_by_cost = True
                continue
            pick = o
            break
        if pick is None:
            if blocked_by_cost:
                reason = f"cost cap reached: {hourly_cost:.4f}/h of {cost_cap_hourly:g}/h in use"
            elif held:
                reason = "; ".join(held)
            elif any(o.available for o in outposts):
                reason = "all available outposts at max_workers"
            else:
                reason = "no outpost available (unreachable or circuit breaker open)"
            break
        chosen.append(pick.name)
        live[pick.name] += 1
        hourly_cost += pick.cost_per_hour
    return Placement(tuple(chosen), count - len(chosen), reason)
