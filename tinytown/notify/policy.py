"""Which targets want an event, and when a failed delivery is tried again. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from tinytown.config.notify import NotifyTarget


def wanted_by(targets: Iterable[NotifyTarget], kind: str, doc: Mapping) -> list[NotifyTarget]:
    """The targets whose ``events`` include ``kind`` and whose ``missions`` (when set) include
    the event's mission; an event of no mission goes only to targets without a mission filter."""
    mission = str(doc.get("mission_id") or "").lower()
    return [
        t
        for t in targets
        if kind in t.events and (not t.missions or (mission and mission in t.missions))
    ]


def backoff_secs(attempt: int, base_secs: float, max_secs: float) -> float:
    """The wait after failed attempt ``attempt`` (1, 2, …): ``base``, doubling, at most ``max``."""
    return min(max_secs, base_secs * 2 ** max(0, min(attempt - 1, 62)))
