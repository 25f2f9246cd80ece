"""What people call an agent — its name, its nickname or its 4-character short id, lowercased —
indexed to its ids, so that naming an agent (REST, MCP, A2A, ``tt``) or checking a worker's name
reads only the records that answer to it, not every record of the town (decision 4).

``agents:by_name:<name>`` and ``agents:by_ref:<nickname or short id>`` are sets of ids. An id
is added before its record is made and removed with it (in the same transaction), so a crash in
between leaves an id without a record, which readers skip, never a record nobody can name.
Readers check each record against what was asked all the same. A town made before these indexes
gets them once, when a program connects (:func:`build`); until then readers read every record.
"""

from __future__ import annotations

import redis

from tinytown.core.keys import Keys
from tinytown.core.records import Agent


def _refs(keys: Keys, agent_id: str, nickname: str) -> list[str]:
    return [keys.agents_called(r) for r in (nickname, agent_id[:4]) if r]


def queue_add(pipe, keys: Keys, agent_id: str, name: str, nickname: str) -> None:
    pipe.sadd(keys.agents_named(name), agent_id)
    for key in _refs(keys, agent_id, nickname):
        pipe.sadd(key, agent_id)


def queue_remove(pipe, keys: Keys, agent_id: str, name: str | None, nickname: str | None) -> None:
    if name:
        pipe.srem(keys.agents_named(name), agent_id)
    for key in _refs(keys, agent_id, nickname or ""):
        pipe.srem(key, agent_id)


def add(r: redis.Redis, keys: Keys, agent_id: str, name: str, nickname: str) -> None:
    pipe = r.pipeline(transaction=False)
    queue_add(pipe, keys, agent_id, name, nickname)
    pipe.execute()


def remove(r: redis.Redis, keys: Keys, agent_id: str, name: str, nickname: str) -> None:
    pipe = r.pipeline(transaction=False)
    queue_remove(pipe, keys, agent_id, name, nickname)
    pipe.execute()


def candidates(r: redis.Redis, keys: Keys, ref: str) -> tuple[list[str], list[str]] | None:
    """The ids named ``ref``, and those nicknamed or short-id'd so (both sorted); None while the
    town has no index yet. One round trip."""
    pipe = r.pipeline(transaction=False)
    pipe.exists(keys.agents_refs_indexed)
    pipe.smembers(keys.agents_named(ref))
    pipe.smembers(keys.agents_called(ref))
    indexed, named, called = pipe.execute()
    return (sorted(named), sorted(called)) if indexed else None


def build(r: redis.Redis, keys: Keys, agents: list[Agent]) -> int:
    """Index every agent of a town made before the indexes (one-time, on connect); how many."""
    pipe = r.pipeline(transaction=False)
    for a in agents:
        queue_add(pipe, keys, a.id, a.name, a.nickname or "")
    pipe.set(keys.agents_refs_indexed, "1")
    pipe.execute()
    return len(agents)
