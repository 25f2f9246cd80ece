"""The town's counts over time, for the status page's chart: a capped stream of samples.

One sample per ``interval`` however many townhall processes run: a process takes the interval
with ``SET … NX PX`` before it writes, so the others skip it.
"""

from __future__ import annotations

import redis

from tinytown.core import defaults
from tinytown.core.chart import Sample
from tinytown.core.keys import Keys


class Samples:
    def __init__(self, r: redis.Redis, keys: Keys):
        self.r, self.keys = r, keys

    def take_turn(self, interval_ms: int) -> bool:
        """True for the one process that samples this interval."""
        return bool(self.r.set(self.keys.samples_lease, "1", nx=True, px=max(1, interval_ms)))

    def record(
        self, queued: int, in_flight: int, live_agents: int, *, at_ms: int | None = None
    ) -> str:
        """Append a sample taken now (Redis clock), or at ``at_ms`` (a backfill)."""
        return self.r.xadd(
            self.keys.samples,
            {"queued": queued, "in_flight": in_flight, "live_agents": live_agents},
            id=f"{at_ms}-*" if at_ms is not None else "*",
            maxlen=defaults.SAMPLES_MAXLEN,
            approximate=True,
        )

    def since(self, start_ms: int) -> list[Sample]:
        """Samples taken at or after ``start_ms`` (Redis clock; a stream id is its time)."""
        out = []
        for entry_id, fields in self.r.xrange(self.keys.samples, min=str(start_ms)):
            try:
                out.append(
                    Sample(
                        int(entry_id.split("-")[0]),
                        int(fields.get("queued", 0)),
                        int(fields.get("in_flight", 0)),
                        int(fields.get("live_agents", 0)),
                    )
                )
            except ValueError:
                continue  # written by hand: skipped
        return out

    def now_ms(self) -> int:
        secs, usecs = self.r.time()
        return secs * 1000 + usecs // 1000
