"""Agent records: register or adopt, resolve a reference, list, state changes, heartbeats."""

from __future__ import annotations

from typing import Iterable

import redis

from .. import control, defaults, inputs
from ..errors import InvalidTransition, NotFound, TinytownError
from ..keys import AGENT_STATES, Keys
from ..records import RESERVED_AGENT_NAMES, SUPERVISOR_ID, Agent, is_uuid, new_id, now, to_rfc3339
from .scripts import AGENT_UPDATE, queue_script
from .tasks import Transition, ensure_group

# Deterministic nicknames (upstream picks from 400 names by the id's first two bytes).
_NICKNAMES = (
    "Robert", "Dorothy", "John", "Helen", "James", "Margaret", "William", "Ruth", "Charles",
    "Mildred", "George", "Virginia", "Joseph", "Elizabeth", "Richard", "Frances", "Edward", "Anna",
    "Donald", "Evelyn", "Thomas", "Marie", "Frank", "Alice", "Harold", "Jean", "Paul", "Doris",
    "Raymond", "Irene", "Walter", "Louise", "Jack", "Florence", "Henry", "Lillian", "Arthur", "Rose",
    "Albert", "Martha",
)  # fmt: skip


def nickname_for(agent_id: str) -> str:
    hexpart = agent_id.replace("-", "")[:4]
    try:
        return _NICKNAMES[int(hexpart, 16) % len(_NICKNAMES)]
    except ValueError:
        return _NICKNAMES[0]


class AgentStore:
    def __init__(self, r: redis.Redis, keys: Keys):
        self.r, self.keys = r, keys
        self._update = r.register_script(AGENT_UPDATE)
        self.scripts = (self._update,)  # for scripts.execute_pipelined after a cache loss

    # -- create -----------------------------------------------------------------------------

    def register(
        self,
        name: str,
        cli: str,
        *,
        agent_id: str | None = None,
        role_id: str | None = None,
        nickname: str | None = None,
        parent_agent_id: str | None = None,
    ) -> Agent:
        """Register a new agent in state ``starting``, or adopt the record ``agent_id`` names.

        Adopting keeps the counters and creation time of an existing record (a restarted
        container keeps its identity); an unknown ``agent_id`` is created with that id.
        """
        try:
            inputs.name(name, "agent name")
        except inputs.InputError as err:  # TINYTOWN_AGENT_NAME, or a host name outside the rule
            raise TinytownError(f"{err} (set TINYTOWN_AGENT_NAME)") from None
        if name.lower() in RESERVED_AGENT_NAMES:
            raise TinytownError(f"agent name {name!r} is reserved; choose another name")
        agent_id = agent_id or new_id()
        if not is_uuid(agent_id):
            raise TinytownError(f"agent id {agent_id!r} is not a UUID")
        ts = to_rfc3339(now())
        existing = self.find(agent_id)
        if existing is not None:
            fields = {"name": name, "cli": cli, "last_heartbeat": ts, "last_active_at": ts}
            if role_id:
                fields["role_id"] = role_id
            self.update(agent_id, "starting", set_fields=fields, delete_fields=("current_task",))
            agent = self.get(agent_id)
        else:
            agent = Agent(
                id=agent_id, name=name, cli=cli, created_at=ts, last_heartbeat=ts, last_active_at=ts,
                nickname=nickname or nickname_for(agent_id), role_id=role_id, parent_agent_id=parent_agent_id,
            )  # fmt: skip
            pipe = self.r.pipeline(transaction=True)
            pipe.hset(self.keys.agent(agent_id), mapping=agent.to_hash())
            pipe.sadd(self.keys.agents, agent_id)
            pipe.sadd(self.keys.agents_in_state(agent.state), agent_id)
            pipe.execute()
        ensure_group(self.r, self.keys.agent_docket(agent_id))
        return agent

    # -- read -------------------------------------------------------------------------------

    def find(self, agent_id: str) -> Agent | None:
        data = self.r.hgetall(self.keys.agent(agent_id))
        return Agent.from_hash(data) if data else None

    def get(self, agent_id: str) -> Agent:
        agent = self.find(agent_id)
        if agent is None:
            raise NotFound(f"agent {agent_id} not found")
        return agent

    def all(self) -> list[Agent]:
        """Every registered agent, from the ``agents`` index (one pipeline, no key-space scan)."""
        ids = sorted(self.r.smembers(self.keys.agents))
        if not ids:
            return []
        pipe = self.r.pipeline(transaction=False)
        for agent_id in ids:
            pipe.hgetall(self.keys.agent(agent_id))
        return [Agent.from_hash(d) for d in pipe.execute() if d]

    def counts(self) -> dict[str, int]:
        """Number of agents in each state (``SCARD`` per index)."""
        pipe = self.r.pipeline(transaction=False)
        for state in AGENT_STATES:
            pipe.scard(self.keys.agents_in_state(state))
        return dict(zip(AGENT_STATES, pipe.execute()))

    def resolve(self, ref: str) -> Agent:
        """An agent by UUID, name, nickname or short id (case-insensitive), as upstream §3.

        ``supervisor``/``conductor`` are not agents with records; callers that accept them
        check :data:`SUPERVISOR_ID` first.
        """
        ref = ref.strip()
        if is_uuid(ref):
            return self.get(ref.lower())
        wanted = ref.lower()
        everyone = self.all()
        # A name beats a nickname or short id: "alice" is the agent named alice even when another
        # agent's generated nickname is Alice.
        matches = [a for a in everyone if a.name.lower() == wanted] or [
            a for a in everyone if wanted in ((a.nickname or "").lower(), a.short_id())
        ]
        if not matches:
            raise NotFound(f"agent {ref!r} not found")
        if len(matches) > 1:
            live = [a for a in matches if a.active]
            if len(live) == 1:
                return live[0]
            names = ", ".join(f"{a.name} ({a.id})" for a in matches)
            raise TinytownError(f"agent reference {ref!r} is ambiguous: {names}; use the id")
        return matches[0]

    # -- changes ----------------------------------------------------------------------------

    def update(self, agent_id: str, new_state: str | None = None, **options) -> Transition:
        """Set fields and (optionally) the state, keeping the per-state sets exact."""
        keys, args = self.update_request(agent_id, new_state, **options)
        return Transition(*self._update(keys=keys, args=args))

    def queue_update(self, pipe, agent_id: str, new_state: str | None = None, **options) -> None:
        """Queue an :meth:`update` on ``pipe`` (see ``scripts.execute_pipelined``); its reply is
        ``[status, old state]``."""
        keys, args = self.update_request(agent_id, new_state, **options)
        queue_script(pipe, self._update, keys, args)

    def update_request(
        self,
        agent_id: str,
        new_state: str | None = None,
        *,
        allowed_from: Iterable[str] | None = None,
        set_fields: dict[str, str] | None = None,
        delete_fields: Iterable[str] = (),
    ) -> tuple[list[str], list[str]]:
        """The update script's keys and arguments."""
        if new_state is not None and new_state not in AGENT_STATES:
            raise ValueError(f"unknown agent state {new_state!r}")
        allowed = "*" if allowed_from is None else "," + ",".join(allowed_from) + ","
        set_fields = set_fields or {}
        delete_fields = list(delete_fields)
        args = [agent_id, allowed, new_state or "", str(len(set_fields)), str(len(delete_fields))]
        for k, v in set_fields.items():
            args += [k, v]
        args += delete_fields
        keys = [self.keys.agent(agent_id)] + [self.keys.agents_in_state(s) for s in AGENT_STATES]
        return keys, args

    def set_state(self, agent_id: str, state: str, *, allowed_from: Iterable[str] | None = None, **fields: str) -> str:
        """Change state (and fields); returns the previous state. Raises if missing or not allowed."""
        result = self.update(agent_id, state, allowed_from=allowed_from, set_fields=fields)
        if result.status == "missing":
            raise NotFound(f"agent {agent_id} not found")
        if result.status == "state":
            raise InvalidTransition("agent", agent_id, result.old_state, f"moved to {state}")
        return result.old_state

    def request_stop(self, agent_id: str) -> str:
        """Stop an agent from outside: the stop flag (an hour, as upstream), state ``stopped``, and
        a nudge so an idle worker leaves at once (a working one after its task). Returns the
        previous state; raises like :meth:`set_state`."""
        self.r.set(self.keys.stop(agent_id), "1", ex=defaults.STOP_FLAG_TTL_SECS)
        previous = self.set_state(agent_id, "stopped")
        control.publish(self.r, self.keys, agent_id, control.STOP)
        return previous

    def heartbeat(self, agent_id: str) -> bool:
        """Write ``last_heartbeat``; False if the record is gone (never recreates a partial one)."""
        return self.update(agent_id, set_fields={"last_heartbeat": to_rfc3339(now())}).ok

    def queue_heartbeat(self, pipe, agent_id: str) -> None:
        """Queue a :meth:`heartbeat` on ``pipe`` (see ``scripts.execute_pipelined``)."""
        self.queue_update(pipe, agent_id, set_fields={"last_heartbeat": to_rfc3339(now())})

    def delete(self, agent_id: str) -> None:
        """Remove an agent record, its indexes, inboxes and flags."""
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(
            self.keys.agent(agent_id), self.keys.inbox(agent_id), self.keys.urgent(agent_id),
            self.keys.activity(agent_id), self.keys.stop(agent_id),
        )  # fmt: skip
        pipe.srem(self.keys.agents, agent_id)
        for state in AGENT_STATES:
            pipe.srem(self.keys.agents_in_state(state), agent_id)
        pipe.execute()


__all__ = ["AgentStore", "SUPERVISOR_ID", "nickname_for"]
