"""What the scaler remembers between passes: the cooldown and hysteresis count, each outpost's
circuit breaker, crash-loop watch and last seen hourly cost, and per container its health
failures, restarts, drain request and error mark. Plain data with its JSON form; reading and
writing the file is :mod:`tinytown.scaler.state_file`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tinytown.scaler.crash_loops import CrashWatch
from tinytown.scaler.defaults import STATE_VERSION
from tinytown.scaler.placement import Breaker


@dataclass
class ContainerMemory:
    outpost: str
    health_failures: int = 0
    restarts: int = 0
    restarted_at: float | None = None
    drain_requested_at: float | None = None
    marked_error_at: float | None = None
    marked_reason: str | None = None
    exit_counted: bool = False  # its exit has been counted toward a crash loop


@dataclass
class State:
    town: str | None = None
    last_scale_up_at: float | None = None
    surplus_passes: int = 0
    removed_cost: float = 0.0  # cost of workers already removed, accumulated
    breakers: dict[str, Breaker] = field(default_factory=dict)
    last_seen_hourly: dict[str, float] = field(default_factory=dict)  # per outpost
    containers: dict[str, ContainerMemory] = field(default_factory=dict)
    crash_loops: dict[str, CrashWatch] = field(default_factory=dict)  # per outpost

    def to_json(self, now: float) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "updated_at": now,
            "town": self.town,
            "last_scale_up_at": self.last_scale_up_at,
            "surplus_passes": self.surplus_passes,
            "removed_cost": round(self.removed_cost, 6),
            "outposts": {
                name: {**dataclasses.asdict(b), "last_seen_hourly": self.last_seen_hourly.get(name)}
                for name, b in self.breakers.items()
            },
            "containers": {cid: dataclasses.asdict(m) for cid, m in self.containers.items()},
            "crash_loops": {name: dataclasses.asdict(w) for name, w in self.crash_loops.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> State:
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"state version {data.get('version')!r}, expected {STATE_VERSION}")
        state = cls(
            data.get("town"),
            data.get("last_scale_up_at"),
            int(data.get("surplus_passes", 0)),
            float(data.get("removed_cost", 0.0)),
        )
        for name, b in (data.get("outposts") or {}).items():
            hourly = b.pop("last_seen_hourly", None)
            state.breakers[name] = Breaker(**b)
            if hourly is not None:
                state.last_seen_hourly[name] = float(hourly)
        for cid, m in (data.get("containers") or {}).items():
            state.containers[cid] = ContainerMemory(**m)
        for name, w in (data.get("crash_loops") or {}).items():
            state.crash_loops[name] = CrashWatch(
                w["streak"], Breaker(**w["hold"]), w.get("last_exit_code")
            )
        return state
