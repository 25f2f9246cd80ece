"""The agents' indexes as an earlier version kept them, brought up to date when a town connects:
per-state sets without liveness become zsets scored by ``alive_until``, a missing deadlines
index is made from them, and names and nicknames are indexed. Nothing to do costs three
commands."""

from __future__ import annotations

from tinytown.core import defaults
from tinytown.core.clock import parse_rfc3339
from tinytown.core.states import ACTIVE_AGENT_STATES, AGENT_STATES
from tinytown.store import agent_refs
from tinytown.store.agents import AgentStore


def upgrade_index(store: AgentStore) -> int:
    """Rebuild the per-state index from the records if this town still has the sets an
    earlier version kept (no liveness), and the deadlines index from the per-state one if
    it is missing; index names and nicknames if they are not (:mod:`.agent_refs`); returns how
    many agents were indexed from their records. Three commands when there is nothing to do."""
    if not store.r.exists(store.keys.agents_refs_indexed):
        agent_refs.build(store.r, store.keys, store.all())
    legacy = [store.keys.legacy_agents_in_state(s) for s in AGENT_STATES]
    if not store.r.exists(*legacy):
        index_deadlines(store)
        return 0
    agents = store.all()
    pipe = store.r.pipeline(transaction=True)
    for agent in agents:
        beat = parse_rfc3339(agent.last_heartbeat)
        interval = agent.heartbeat_interval_secs or store.heartbeat_interval_secs
        until = (
            int(beat.timestamp() * 1000) + interval * defaults.DEAD_AFTER_HEARTBEATS * 1000
            if beat
            else 0
        )
        pipe.hset(
            store.keys.agent(agent.id),
            mapping={"alive_until": str(until), "heartbeat_interval_secs": str(interval)},
        )
        pipe.zadd(store.keys.agents_in_state(agent.state), {agent.id: until})
        if agent.state in ACTIVE_AGENT_STATES:
            pipe.zadd(store.keys.agents_alive, {agent.id: until})
        else:
            pipe.zrem(store.keys.agents_alive, agent.id)
    pipe.delete(*legacy)
    pipe.execute()
    index_deadlines(store)
    return len(agents)


def index_deadlines(store: AgentStore) -> None:
    """The deadlines index (``Keys.agents_alive``) from the per-state one, if it is missing
    (a town kept by a version without it, whose workers run on): one EXISTS otherwise."""
    if not store.r.exists(store.keys.agents_alive):
        active = [store.keys.agents_in_state(s) for s in ACTIVE_AGENT_STATES]
        store.r.zunionstore(store.keys.agents_alive, active, aggregate="MIN")
