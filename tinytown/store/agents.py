"""Agent records: register or adopt, resolve a reference, list, state changes, heartbeats."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import redis

from tinytown.core import defaults
from tinytown.core import events as ev
from tinytown.core.clock import now, to_rfc3339
from tinytown.core.errors import InvalidTransition, NotFound, TinytownError
from tinytown.core.keys import Keys
from tinytown.core.liveness import AgentCounts, Beat, parse_counts
from tinytown.core.records import SUPERVISOR_ID, Agent, is_uuid
from tinytown.core.states import (
    ACTIVE_AGENT_STATES,
    AGENT,
    AGENT_STATES,
    PRUNABLE_AGENT_STATES,
)
from tinytown.store import agent_refs, control
from tinytown.store.agent_names import NameTaken, UniqueNames, nickname_for
from tinytown.store.agent_register import Registration
from tinytown.store.events import Events
from tinytown.store.scripts import (
    AGENT_BEAT,
    AGENT_COUNTS,
    AGENT_UPDATE,
    execute_pipelined,
    queue_script,
)
from tinytown.store.tasks import Transition

# A restart's stop flag is cleared only if the restart took (the agent is now in its target
# state): a refused restart leaves a kill's flag where it was. KEYS: 1 agent hash, 2 stop flag;
# ARGV: 1 the restart's target state.
_CLEAR_STOP = """
if redis.call('HGET', KEYS[1], 'state') ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[2])
"""


class Deaths(NamedTuple):
    """What :meth:`AgentStore.deaths` found past its heartbeat window."""

    active: list[Agent]  # in an active state: to be marked stopped, its work returned
    left_work: list[Agent]  # stopped from outside, its worker gone with a task still recorded


class AgentStore(Registration, UniqueNames):
    def __init__(
        self,
        r: redis.Redis,
        keys: Keys,
        heartbeat_interval_secs: int = defaults.HEARTBEAT_INTERVAL_SECS,
    ):
        self.r, self.keys = r, keys
        # for records made without a worker's own
        self.heartbeat_interval_secs = heartbeat_interval_secs
        self._update = r.register_script(AGENT_UPDATE)
        self._counts = r.register_script(AGENT_COUNTS)
        self._beat = r.register_script(AGENT_BEAT)
        self._clear_stop = r.register_script(_CLEAR_STOP)
        self._events = Events(r, keys)
        # for scripts.execute_pipelined after a cache loss
        self.scripts = (self._update, self._counts, self._beat)

    # -- read -------------------------------------------------------------------------------

    def find(self, agent_id: str) -> Agent | None:
        data = self.r.hgetall(self.keys.agent(agent_id))
        return Agent.from_hash(data) if data else None

    def get(self, agent_id: str) -> Agent:
        agent = self.find(agent_id)
        if agent is None:
            raise NotFound(f"agent {agent_id} not found")
        return agent

    def ids(self) -> set[str]:
        return self.r.smembers(self.keys.agents)

    def names(self, agent_ids) -> dict[str, str]:
        """Each existing agent's name, one round trip."""
        ids = sorted(agent_ids)
        if not ids:
            return {}
        pipe = self.r.pipeline(transaction=False)
        for agent_id in ids:
            pipe.hget(self.keys.agent(agent_id), "name")
        return {i: n for i, n in zip(ids, pipe.execute()) if n is not None}

    def stop_requested(self, agent_id: str) -> bool:
        """The graceful stop flag (``POST /v1/agents/{agent}/kill``) is set."""
        return bool(self.r.exists(self.keys.stop(agent_id)))

    def log_activity(self, agent_id: str, line: str) -> None:
        """Upstream's activity log: newest first, ten lines, an hour."""
        key = self.keys.activity(agent_id)
        pipe = self.r.pipeline(transaction=False)
        pipe.lpush(key, f"[{to_rfc3339(now())}] {line}")
        pipe.ltrim(key, 0, defaults.ACTIVITY_LOG_LINES - 1)
        pipe.expire(key, defaults.ACTIVITY_LOG_TTL_SECS)
        pipe.execute()

    def all(self) -> list[Agent]:
        """Every registered agent, from the ``agents`` index (one pipeline, no key-space scan)."""
        return [a for a in self.many(sorted(self.r.smembers(self.keys.agents))) if a is not None]

    def now_ms(self) -> int:
        """The Redis clock, which every liveness judgement uses (never a host's own)."""
        secs, usecs = self.r.time()
        return secs * 1000 + usecs // 1000

    def settled(self) -> bool:
        """Whether Redis has been up for one dead-after window of the town's interval. Until
        then nobody is judged dead: after a restart every live agent's window may have run out
        while it could not beat, and each beats again within its interval. True when this
        client may not ask (an ACL user without ``INFO``)."""
        try:
            uptime_secs = int(self.r.info("server")["uptime_in_seconds"])
        except redis.ResponseError:
            return True
        return uptime_secs >= self.heartbeat_interval_secs * defaults.DEAD_AFTER_HEARTBEATS

    def dead(self, now_ms: int | None = None) -> list[Agent]:
        """Agents in an active state whose heartbeat window has passed (:meth:`deaths`)."""
        return self.deaths(now_ms).active

    def deaths(self, now_ms: int | None = None) -> Deaths:
        """Agents whose heartbeat window has passed (the Redis clock's now, unless given), read
        from the deadlines index, O(dead agents): those in an active state, and those stopped
        from outside whose worker died while it still ran a task (``current_task`` set). None
        while Redis has just started (:meth:`settled`). An index entry its record contradicts
        (written by an older worker that kept no such index) is set right."""
        now_ms = self.now_ms() if now_ms is None else now_ms
        ids = self.r.zrangebyscore(self.keys.agents_alive, "-inf", now_ms)
        if not ids or not self.settled():
            return Deaths([], [])
        found = dict(zip(ids, self.many(ids)))
        indexed = {i: a for i, a in found.items() if a and (a.active or a.current_task)}
        if stale := {i: a.alive_until for i, a in indexed.items() if a.alive_until > now_ms}:
            self.r.zadd(self.keys.agents_alive, stale, xx=True)
        if gone := [i for i in found if i not in indexed]:
            self.r.zrem(self.keys.agents_alive, *gone)
        late = [a for a in indexed.values() if a.alive_until <= now_ms]
        return Deaths([a for a in late if a.active], [a for a in late if not a.active])

    def next_deadline_ms(self) -> tuple[int | None, int]:
        """The earliest ``alive_until`` among agents in an active state (None: there are none),
        and the Redis clock's now: when the next agent could die. One round trip, two commands."""
        pipe = self.r.pipeline(transaction=False)
        pipe.time()
        pipe.zrange(self.keys.agents_alive, 0, 0, withscores=True)
        (secs, usecs), first = pipe.execute()
        return (int(first[0][1]) if first else None), secs * 1000 + usecs // 1000

    def active_count(self) -> int:
        """Agents in an active state, alive or not."""
        pipe = self.r.pipeline(transaction=False)
        for state in ACTIVE_AGENT_STATES:
            pipe.zcard(self.keys.agents_in_state(state))
        return sum(pipe.execute())

    def many(self, agent_ids: list[str]) -> list[Agent | None]:
        """Records in order (None where one is gone), one pipeline."""
        if not agent_ids:
            return []
        pipe = self.r.pipeline(transaction=False)
        for agent_id in agent_ids:
            pipe.hgetall(self.keys.agent(agent_id))
        return [Agent.from_hash(d) if d else None for d in pipe.execute()]

    def total(self) -> int:
        """How many agent records there are (SCARD)."""
        return self.r.scard(self.keys.agents)

    def active_ids(self) -> list[str]:
        """Agents in an active state (and stopped ones whose worker still finishes a task),
        from the deadlines index: O(such agents), not every agent ever registered."""
        return self.r.zrange(self.keys.agents_alive, 0, -1)

    def alive_ids(self, agent_ids: list[str | None]) -> set[str]:
        """Which of ``agent_ids`` are alive now (active, heartbeat window not over, Redis
        clock); one pipeline."""
        wanted = sorted({a for a in agent_ids if a})
        if not wanted:
            return set()
        pipe = self.r.pipeline(transaction=False)
        pipe.time()
        for agent_id in wanted:
            pipe.hgetall(self.keys.agent(agent_id))
        (secs, usecs), *records = pipe.execute()
        now_ms = secs * 1000 + usecs // 1000
        agents = (Agent.from_hash(d) for d in records if d)
        return {a.id for a in agents if a.alive(now_ms)}

    def counts(self) -> AgentCounts:
        """Agents in each state, live and dead, by the Redis clock (one script, O(log n) per
        state)."""
        return parse_counts(self._counts(keys=self.counts_keys(), args=self.counts_args(False)))

    def queue_counts(self, pipe, *, idle_times: bool) -> None:
        """Queue :meth:`counts` on ``pipe``; its reply goes through :func:`parse_counts`. With
        ``idle_times`` it also reads live idle agents' ``last_active_at`` (O(live idle agents))."""
        queue_script(pipe, self._counts, self.counts_keys(), self.counts_args(idle_times))

    def counts_keys(self) -> list[str]:
        return [self.keys.agents_in_state(s) for s in AGENT_STATES]

    def counts_args(self, idle_times: bool) -> list[str]:
        return [
            self.keys.agent_prefix,
            "1" if idle_times else "0",
            str(AGENT_STATES.index("idle") + 1),
        ]

    def resolve(self, ref: str) -> Agent:
        """An agent by UUID, name, nickname or short id (case-insensitive), as upstream §3.

        ``supervisor``/``conductor`` are not agents with records; callers that accept them
        check :data:`SUPERVISOR_ID` first.
        """
        ref = ref.strip()
        if is_uuid(ref):
            return self.get(ref.lower())
        wanted = ref.lower()
        indexed = agent_refs.candidates(self.r, self.keys, wanted)
        everyone = None if indexed else self.all()  # (a town not indexed yet)
        # A name beats a nickname or short id: "alice" is the agent named alice even when another
        # agent's generated nickname is Alice.
        named = everyone if indexed is None else self.many(indexed[0])
        matches = [a for a in named if a and a.name.lower() == wanted]
        if not matches:
            called = everyone if indexed is None else self.many(indexed[1])
            matches = [
                a for a in called if a and wanted in ((a.nickname or "").lower(), a.short_id())
            ]
        if not matches:
            raise NotFound(f"agent {ref!r} not found")
        if len(matches) > 1:  # the one beating, else the one presumed to run (dead: not yet)
            now_ms = self.now_ms()
            live = [a for a in matches if a.alive(now_ms)] or [a for a in matches if a.active]
            if len(live) == 1:
                return live[0]
            names = ", ".join(f"{a.name} ({a.id})" for a in matches)
            raise TinytownError(f"agent reference {ref!r} is ambiguous: {names}; use the id")
        return matches[0]

    # -- changes ----------------------------------------------------------------------------

    def update(self, agent_id: str, move: str = "beat", **options) -> Transition:
        """Make the named move of the state table (``AGENT[move]``; "beat": fields only, in any
        state) with its fields and (with ``beat``) a heartbeat, keeping the per-state index exact.
        Options as :meth:`update_request`."""
        keys, args = self.update_request(agent_id, move, **options)
        if args[1] == ",":  # ``expect`` is not a state this move leaves from: nothing can happen
            return Transition("state", options["expect"])
        return Transition(*self._update(keys=keys, args=args))

    def queue_update(self, pipe, agent_id: str, move: str = "beat", **options) -> None:
        """Queue an :meth:`update` on ``pipe`` (see ``scripts.execute_pipelined``); its reply is
        ``[status, old state]``."""
        keys, args = self.update_request(agent_id, move, **options)
        queue_script(pipe, self._update, keys, args)

    def update_request(
        self,
        agent_id: str,
        move: str = "beat",
        *,
        expect: str | None = None,
        set_fields: dict[str, str] | None = None,
        delete_fields: Iterable[str] = (),
        beat: Beat | None = None,
        create: bool = False,
    ) -> tuple[list[str], list[str]]:
        """The update script's keys and arguments. ``beat``: a heartbeat (``last_heartbeat``,
        ``heartbeat_interval_secs``, ``alive_until``); ``create``: make the record if missing."""
        rule = AGENT[move]
        set_fields = dict(set_fields or {})
        if owned := {"state", "last_heartbeat", "alive_until"} & (
            set(set_fields) | set(delete_fields)
        ):
            raise ValueError(
                f"may not set or delete {', '.join(sorted(owned))} in an update; "
                "give a state or a beat"
            )
        allowed = "," + ",".join(rule.narrowed(expect)) + ","
        dead_after_ms, age_ms = "", "0"
        if beat is not None:
            set_fields["heartbeat_interval_secs"] = str(beat.interval_secs)
            dead_after_ms, age_ms = str(beat.dead_after_ms), str(beat.age_ms)
        delete_fields = list(delete_fields)
        args = [
            agent_id,
            allowed,
            rule.target or "",
            dead_after_ms,
            age_ms,
            "1" if create else "0",
            str(len(set_fields)),
            str(len(delete_fields)),
        ]
        for k, v in set_fields.items():
            args += [k, v]
        args += delete_fields
        keys = [self.keys.agent(agent_id), self.keys.agents, self.keys.events]
        keys += [self.keys.agents_in_state(s) for s in AGENT_STATES] + [self.keys.agents_alive]
        return keys, args

    def set_state(self, agent_id: str, move: str, **fields: str) -> str:
        """Make a move (with fields); returns the previous state. Raises if missing or not
        allowed."""
        result = self.update(agent_id, move, set_fields=fields)
        if result.status == "missing":
            raise NotFound(f"agent {agent_id} not found")
        if result.status == "state":
            raise InvalidTransition(
                "agent", agent_id, result.old_state, f"moved to {AGENT[move].target} ({move})"
            )
        return result.old_state

    def pause(self, agent_id: str) -> str:
        """An operator's pause: the agent takes no new work (a CLI running now runs to its end).
        Returns the previous state; InvalidTransition unless starting, idle or working."""
        return self.set_state(agent_id, "pause")

    def resume(self, agent_id: str) -> str:
        """Lift a pause: back to idle, or to working while its CLI still runs a task (idle would
        let a scaler remove its worker). Returns the previous state."""
        agent = self.get(agent_id)
        busy = agent.current_task and agent.alive(self.now_ms())
        return self.set_state(agent_id, "resume_work" if busy else "resume")

    def request_stop(self, agent_id: str) -> str:
        """Stop an agent from outside: the stop flag (an hour, as upstream), state ``stopped``, and
        a nudge so an idle worker leaves at once (a working one after its task). Returns the
        previous state; raises like :meth:`set_state`."""
        self.r.set(self.keys.stop(agent_id), "1", ex=defaults.STOP_FLAG_TTL_SECS)
        previous = self.set_state(agent_id, "kill")
        control.publish(self.r, self.keys, agent_id, control.STOP)
        return previous

    def restart(self, agent_id: str) -> str:
        """REST restart, as upstream: state ``idle``, ``rounds_completed`` 0, a heartbeat now and
        the stop flag cleared — one transaction. Returns the previous state; NotFound if missing,
        InvalidTransition while its CLI runs a task (working, draining, or paused with a task
        recorded: idle would let a scaler remove a worker that holds a task)."""
        agent = self.get(agent_id)
        busy = (
            "restarted while it works on a task (wait for the task to end, or, if its worker is "
            "gone, for the keeper to mark it stopped; or kill the agent)"
        )
        if agent.current_task and agent.alive(self.now_ms()):
            raise InvalidTransition("agent", agent.name, agent.state, busy)
        keys, args = self.update_request(
            agent_id,
            "restart",
            set_fields={"rounds_completed": "0", "last_active_at": to_rfc3339(now())},
            beat=Beat(self.heartbeat_interval_secs),
        )
        flags = [self.keys.agent(agent_id), self.keys.stop(agent_id)]

        def build(pipe):
            queue_script(pipe, self._update, keys, args)
            queue_script(pipe, self._clear_stop, flags, [AGENT["restart"].target])

        scripts = (self._update, self._clear_stop)
        (status, old), _ = execute_pipelined(self.r, build, scripts, transaction=True)
        if status == "missing":
            raise NotFound(f"agent {agent_id} not found")
        if status == "state":
            raise InvalidTransition("agent", agent.name, old, busy)
        return old

    def heartbeat(self, agent_id: str, interval_secs: int | None = None) -> bool:
        """A heartbeat now (Redis clock); False if the record is gone (never recreates one)."""
        return self.update(agent_id, beat=Beat(interval_secs or self.heartbeat_interval_secs)).ok

    def queue_worker_beat(self, pipe, agent_id: str, interval_secs: int) -> None:
        """Queue a worker's heartbeat on ``pipe`` (see ``scripts.execute_pipelined``): as
        :meth:`heartbeat`, and it reads what the worker's controls say. Its reply is
        ``[status, state, stop flag, lists holding messages]`` (``['missing']``: the record is
        gone)."""
        k = self.keys
        keys = [k.agent(agent_id), k.stop(agent_id), k.urgent(agent_id), k.inbox(agent_id)]
        keys += [k.agents_in_state(s) for s in AGENT_STATES] + [k.agents_alive]
        args = [agent_id, str(Beat(interval_secs).dead_after_ms), str(interval_secs)]
        queue_script(pipe, self._beat, keys, args)

    def delete(self, agent_id: str) -> None:
        """Remove an agent record, its indexes, inboxes and flags, with its agent_deleted event
        (naming the agent and the state it was in when read just before)."""
        name, state, nickname = self.r.hmget(self.keys.agent(agent_id), "name", "state", "nickname")
        gone = name is None and state is None  # (deleted already: a prune raced another)
        doc = ev.event(
            ev.AGENT_DELETED,
            f"agent {name or agent_id} deleted" + (f" (was {state})" if state else ""),
            to_rfc3339(now()),
            agent_id=agent_id,
            old_state=state,
        )
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(
            self.keys.agent(agent_id),
            self.keys.inbox(agent_id),
            self.keys.urgent(agent_id),
            self.keys.activity(agent_id),
            self.keys.stop(agent_id),
        )
        pipe.srem(self.keys.agents, agent_id)
        for each in AGENT_STATES:
            pipe.zrem(self.keys.agents_in_state(each), agent_id)
        pipe.zrem(self.keys.agents_alive, agent_id)
        agent_refs.queue_remove(pipe, self.keys, agent_id, name, nickname)
        if not gone:
            pipe.execute_command(*self._events.commands(doc)[0])
        pipe.execute()

    def prune_stopped(self, retention_secs: int) -> list[str]:
        """:meth:`delete` agents stopped or in error whose heartbeat window ended more than
        ``retention_secs`` ago (Redis clock; found in the per-state index, scored by
        ``alive_until``), at most ``AGENT_PRUNE_BATCH`` per state; returns their names."""
        cutoff = self.now_ms() - retention_secs * 1000
        pipe = self.r.pipeline(transaction=False)
        for state in PRUNABLE_AGENT_STATES:
            key = self.keys.agents_in_state(state)
            pipe.zrangebyscore(key, "-inf", f"({cutoff}", start=0, num=defaults.AGENT_PRUNE_BATCH)
        ids = sorted(set().union(*pipe.execute()))
        pruned = []
        for agent in self.many(ids):  # as they are now: one adopted meanwhile stays
            if agent and agent.state in PRUNABLE_AGENT_STATES and agent.alive_until < cutoff:
                self.delete(agent.id)
                pruned.append(agent.name)
        return pruned


__all__ = ["AgentStore", "NameTaken", "SUPERVISOR_ID", "nickname_for"]
