"""Agent names: upstream's nicknames, and a worker's name unique among live agents (a worker
started under a live agent's name is refused, unless that agent's worker is provably gone)."""

from __future__ import annotations

import redis

from tinytown.core.clock import parse_rfc3339
from tinytown.core.errors import TinytownError
from tinytown.core.liveness import Beat
from tinytown.core.records import Agent
from tinytown.store import agent_refs

# Deterministic nicknames (upstream picks from 400 names by the id's first two bytes).
_NICKNAMES = tuple(
    (
        "Robert Dorothy John Helen James Margaret William Ruth Charles Mildred George Virginia "
        "Joseph Elizabeth Richard Frances Edward Anna Donald Evelyn Thomas Marie Frank Alice "
        "Harold Jean Paul Doris Raymond Irene Walter Louise Jack Florence Henry Lillian Arthur "
        "Rose Albert Martha"
    ).split()
)


def nickname_for(agent_id: str) -> str:
    hexpart = agent_id.replace("-", "")[:4]
    try:
        return _NICKNAMES[int(hexpart, 16) % len(_NICKNAMES)]
    except ValueError:
        return _NICKNAMES[0]


class NameTaken(TinytownError):
    """A live agent already has the name a worker registers with."""


class UniqueNames:
    """The name checks of :class:`tinytown.store.agents.AgentStore` (its mixin: they use its
    ``r``, ``keys``, ``heartbeat_interval_secs``, ``now_ms``, ``all``, ``many``, ``update`` and
    ``update_request``)."""

    def check_name_free(self, name: str, agent_id: str) -> None:
        """:class:`NameTaken` if another live agent (not a stopped or dead one) is ``name``.

        A holder whose window has not ended but whose worker is gone (:meth:`worker_gone`: a
        worker killed and started again under its name, as a container restarted in place) is
        not live: its window is ended now, so every view calls it dead and townhall's keeper
        recovers what it held, and the name is free."""
        now_ms = self.now_ms()
        indexed = agent_refs.candidates(self.r, self.keys, name)
        holders = [a for a in self.many(indexed[0]) if a] if indexed else self.all()
        for a in holders:
            if a.id != agent_id and a.name.lower() == name.lower() and a.alive(now_ms):
                if self.worker_gone(a, now_ms):
                    interval = a.heartbeat_interval_secs or self.heartbeat_interval_secs
                    self.update(a.id, beat=Beat(interval, age_ms=Beat(interval).dead_after_ms))
                    continue
                raise NameTaken(
                    f"agent name {name!r} is taken by live agent {a.id} ({a.state}, last "
                    f"heartbeat {a.heartbeat_age_secs(now_ms)} s ago); set another "
                    f"TINYTOWN_AGENT_NAME, or stop it first (tt send {a.id} --kind shutdown)"
                )

    def worker_gone(self, agent: Agent, now_ms: int) -> bool:
        """Whether the worker of an agent whose window has not ended is gone all the same: it
        registered more than two heartbeat intervals ago (a worker listens on its control
        channel a moment after registering) and nobody listens on its control channel (a
        process that dies loses its subscription with its connection). False when this client
        may not ask (``PUBSUB NUMSUB``)."""
        created = parse_rfc3339(agent.created_at)
        grace_ms = 2 * self.heartbeat_interval_secs * 1000
        if created is None or now_ms - created.timestamp() * 1000 < grace_ms:
            return False
        try:
            ((_, listeners),) = self.r.pubsub_numsub(self.keys.control(agent.id))
        except redis.ResponseError:
            return False
        return int(listeners) == 0

    def create_if_name_free(self, name: str, agent_id: str, record: dict, beat: Beat) -> None:
        """Create the record unless a live agent has the name, as one atomic step: the look is
        made under WATCH of the agents set, so an agent registered meanwhile makes it retry."""
        keys, args = self.update_request(
            agent_id, "register", set_fields=record, beat=beat, create=True
        )
        while True:
            with self.r.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(self.keys.agents)
                    self.check_name_free(name, agent_id)
                    pipe.multi()
                    # EVAL with the text, not EVALSHA: rare, and no NOSCRIPT inside MULTI
                    pipe.eval(self._update.script, len(keys), *keys, *args)
                    pipe.execute()
                    return
                except redis.WatchError:
                    continue
