"""How many times a Redis command ran during a call (``INFO commandstats`` deltas, Lua's own
calls included): for tests that a read does not grow with the town (decision 4)."""

from __future__ import annotations


def calls(town, command: str, call) -> int:
    """How many ``command``s (e.g. ``"hgetall"``) Redis ran while ``call()`` ran."""

    def count() -> int:
        stats = town.redis.info("commandstats").get(f"cmdstat_{command}", {})
        return int(stats.get("calls", 0)) if isinstance(stats, dict) else 0

    before = count()
    call()
    return count() - before
