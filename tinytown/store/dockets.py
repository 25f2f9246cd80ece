"""Every stream of the town's docket, as recovery sees it: who holds what, whether a holder is
dead, and giving entries back (``tt recover``, townhall's keeper, idle workers' share). One
worker's own view of the docket — reading, claiming, keeping, acknowledging — is
:mod:`tinytown.store.docket`.
"""

from __future__ import annotations

import redis

from tinytown.core import defaults
from tinytown.core.records import Agent

GROUP = defaults.DOCKET_GROUP

# Remove a consumer from the group only if it holds nothing, atomically (DELCONSUMER would
# otherwise drop the entries it holds from the pending list, and with them their reclaim).
# KEYS: 1 stream; ARGV: 1 group, 2 consumer. Returns 1 if removed.
_FORGET_CONSUMER = """
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) > 0 then return 0 end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
"""

# Hand an entry back to its stream: a copy goes to the end (for any reader), the original is
# acknowledged, in one step. A worker's read that brought an entry it did not take (one from
# each stream, or a claim refused); recovery, for an entry a dead holder read but never took —
# only while that holder (ARGV[3]) still holds it: another worker may have taken it over since.
# KEYS: 1 stream; ARGV: 1 group, 2 entry id, [3 holder]. Returns the new entry id ('' if the
# entry is gone, or is no longer the holder's).
RELEASE_ENTRY = """
if ARGV[3] and #redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1, ARGV[3]) == 0 then
  return ''
end
local e = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
local new = ''
if #e > 0 then new = redis.call('XADD', KEYS[1], '*', unpack(e[1][2])) end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
return new
"""


# Acknowledge an entry only while this consumer holds it (a worker ending its round; recovery,
# for a dead holder's entry that another worker may have taken over meanwhile).
# KEYS: 1 stream; ARGV: 1 group, 2 consumer, 3 entry id. Returns 1 if acknowledged.
ACK_IF_HELD = """
if #redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1, ARGV[2]) == 0 then return 0 end
return redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
"""


def is_dead(agent: Agent | None, now_ms: int) -> bool:
    """Missing, terminal, or no heartbeat within its own window (``Agent.alive``, Redis clock)."""
    return agent is None or not agent.alive(now_ms)


def held_entries(
    r: redis.Redis, stream: str, consumer: str, *, min_idle_ms: int = 0, count: int = 100
) -> list[tuple[str, int]]:
    """``(entry id, idle ms)`` of entries ``consumer`` holds on ``stream`` (oldest first)."""
    try:
        rows = r.xpending_range(
            stream,
            GROUP,
            min="-",
            max="+",
            count=count,
            consumername=consumer,
            idle=min_idle_ms or None,
        )
    except redis.ResponseError as err:  # no stream or no group: nothing held
        if "NOGROUP" in str(err):
            return []
        raise
    return [(row["message_id"], int(row["time_since_delivered"])) for row in rows]


def holders(r: redis.Redis, stream: str) -> dict[str, int]:
    """Consumer → number of entries it holds on ``stream`` (``XPENDING`` summary)."""
    try:
        summary = r.xpending(stream, GROUP)
    except redis.ResponseError as err:
        if "NOGROUP" in str(err):
            return {}
        raise
    return {c["name"]: int(c["pending"]) for c in summary.get("consumers") or []}


def forget_consumer(r: redis.Redis, stream: str, consumer: str) -> bool:
    """Remove ``consumer`` from the group on ``stream`` if it holds nothing (atomic check)."""
    try:
        return bool(r.register_script(_FORGET_CONSUMER)(keys=[stream], args=[GROUP, consumer]))
    except redis.ResponseError:  # no such stream or group
        return False


def entry_task_id(r: redis.Redis, stream: str, entry_id: str) -> str | None:
    rows = r.xrange(stream, entry_id, entry_id)
    return rows[0][1].get("task_id") if rows else None


class Dockets:
    """Every stream of the town's docket, for recovery: who holds what, and giving entries back."""

    def __init__(self, r: redis.Redis, keys):
        self.r, self.keys = r, keys

    def holders(self, stream: str) -> dict[str, int]:
        return holders(self.r, stream)

    def held(
        self, stream: str, consumer: str, *, min_idle_ms: int = 0, count: int = 100
    ) -> list[tuple[str, int]]:
        return held_entries(self.r, stream, consumer, min_idle_ms=min_idle_ms, count=count)

    def task_of(self, stream: str, entry_id: str) -> str | None:
        return entry_task_id(self.r, stream, entry_id)

    def ack(self, stream: str, entry_id: str, holder: str) -> bool:
        """Acknowledge the entry if ``holder`` still holds it (not if another worker took it
        over since it was listed); True if it did."""
        script = self.r.register_script(ACK_IF_HELD)
        return bool(script(keys=[stream], args=[GROUP, holder, entry_id]))

    def release(self, stream: str, entry_id: str, holder: str) -> str:
        """Put an entry ``holder`` still holds back for any reader of ``stream``: a copy added,
        the original acknowledged (one script). Returns the copy's id ('' if the entry was gone
        or is no longer the holder's)."""
        script = self.r.register_script(RELEASE_ENTRY)
        return script(keys=[stream], args=[GROUP, entry_id, holder])

    def forget(self, stream: str, consumer: str) -> bool:
        return forget_consumer(self.r, stream, consumer)
