"""Registering an agent: a new record in ``starting``, or the record a worker adopts by its id
(a restarted container keeps its identity), with its names indexed (:mod:`.agent_refs`).
:class:`tinytown.store.agents.AgentStore`'s mixin: it uses the store's ``r``, ``keys``,
``heartbeat_interval_secs``, ``find``, ``get``, ``update``, ``check_name_free`` and
``create_if_name_free``."""

from __future__ import annotations

from tinytown.core import inputs
from tinytown.core.clock import now, to_rfc3339
from tinytown.core.errors import TinytownError
from tinytown.core.liveness import Beat
from tinytown.core.records import RESERVED_AGENT_NAMES, Agent, is_uuid, new_id
from tinytown.store import agent_refs
from tinytown.store.agent_names import nickname_for
from tinytown.store.tasks import ensure_group


class Registration:
    def register(
        self,
        name: str,
        cli: str,
        *,
        agent_id: str | None = None,
        role_id: str | None = None,
        nickname: str | None = None,
        parent_agent_id: str | None = None,
        heartbeat_interval_secs: int | None = None,
        unique_name: bool = False,
    ) -> Agent:
        """Register a new agent in state ``starting``, or adopt the record ``agent_id`` names.

        Adopting keeps the counters and creation time of an existing record (a restarted
        container keeps its identity); an unknown ``agent_id`` is created with that id. Either
        way it counts as one heartbeat, at ``heartbeat_interval_secs`` (the worker's own; default
        the town's ``[agent]`` setting), which the agent's liveness is judged by from then on.
        ``unique_name`` (workers): :class:`NameTaken` if another live agent has the name.
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
        beat = Beat(heartbeat_interval_secs or self.heartbeat_interval_secs)
        existing = self.find(agent_id)
        if existing is not None and not existing.id:  # counters only, left by a write after a
            self.r.delete(self.keys.agent(agent_id))  # prune: no record to adopt
            existing = None
        if existing is not None:
            if unique_name:
                self.check_name_free(name, agent_id)
            fields = {"name": name, "cli": cli, "last_active_at": ts}
            if role_id:
                fields["role_id"] = role_id
            renamed = existing.name.lower() != name.lower()
            if renamed:  # (the new name first: a crash leaves an id to skip, not a lost name)
                agent_refs.add(self.r, self.keys, agent_id, name, "")
            self.update(
                agent_id, "register", set_fields=fields, delete_fields=("current_task",), beat=beat
            )
            if renamed:
                self.r.srem(self.keys.agents_named(existing.name), agent_id)
        else:
            agent = Agent(
                id=agent_id,
                name=name,
                cli=cli,
                created_at=ts,
                last_active_at=ts,
                nickname=nickname or nickname_for(agent_id),
                role_id=role_id,
                parent_agent_id=parent_agent_id,
            )
            owned = ("state", "last_heartbeat", "alive_until")  # the update script's
            record = {k: v for k, v in agent.to_hash().items() if k not in owned}
            agent_refs.add(self.r, self.keys, agent_id, name, agent.nickname or "")
            try:
                if unique_name:
                    self.create_if_name_free(name, agent_id, record, beat)
                else:
                    self.update(agent_id, "register", set_fields=record, beat=beat, create=True)
            except TinytownError:  # (NameTaken): no record, so no names either
                agent_refs.remove(self.r, self.keys, agent_id, name, agent.nickname or "")
                raise
        ensure_group(self.r, self.keys.agent_docket(agent_id))
        return self.get(agent_id)
