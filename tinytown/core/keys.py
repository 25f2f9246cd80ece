"""Every Redis key name Tinytown uses. Nothing else in the code spells ``tt:``.

Names follow upstream tinytown (``tt:<town>:…``, upstream spec §4.1) where the concept is the
same, so its ``redis-cli`` recipes keep working. The index keys are ours: they keep agents,
tasks by state and missions listable and countable without scanning the key space.

| Key | Type | Holds |
|---|---|---|
| ``agent:<id>`` | hash | agent record |
| ``agents`` | set | every agent id |
| ``agents:by_state:<state>`` | zset | agent ids in that state, scored by ``alive_until`` |
| ``agents:by_name:<name>`` | set | agent ids by lowercased name |
| ``agents:by_ref:<ref>`` | set | agent ids by lowercased nickname or short id |
| ``inbox:<id>`` / ``urgent:<id>`` | list | JSON messages for the agent |
| ``activity:<id>`` | list | last activity lines |
| ``stop:<id>`` | string | graceful stop flag |
| ``task:<id>`` | hash | task record |
| ``task_token:<id>`` | string | SHA-256 of the running attempt's task token (expires) |
| ``page_session:<sha256>`` | hash | a status-page log-in: principal, scopes, binding (expires) |
| ``page_sessions`` | zset | those sessions' digests, scored by expiry (Unix seconds) |
| ``task:<id>:output`` | stream | the task's CLI output as it runs (capped in bytes, expires) |
| ``tasks`` | zset | every task id, scored by creation time (µs) |
| ``tasks:state:<state>`` | zset | task ids in that state, scored by creation time (µs) |
| ``backlog`` | list | unassigned pending task ids, FIFO (upstream-compatible) |
| ``docket:tasks`` | stream | the shared docket, consumer group ``workers`` |
| ``docket:agent:<id>`` | stream | tasks aimed at one agent, same group |
| ``events`` | stream | the town's events (capped): every state change, in its transaction |
| ``docket:events`` | stream | upstream's docket events (named, not written here) |
| ``events:mission:<id>`` | stream | one mission's events (capped) |
| ``notify:outbox`` / ``notify:dead`` | stream | notifications to send / given up on |
| ``mission:<id>`` … | string/hash | mission documents (upstream §4.7) |
| ``missions`` | zset | every mission id, scored by creation time (µs) |
| ``mission:active`` | set | active mission ids |

``agents:by_state:<state>`` scores are ``alive_until`` (ms, Redis clock): counting those above now
gives the live ones.
"""

from __future__ import annotations

from dataclasses import dataclass

PREFIX = "tt"


@dataclass(frozen=True)
class Keys:
    """Key names of one town."""

    town: str

    def _k(self, *parts: str) -> str:
        return ":".join((PREFIX, self.town, *parts))

    # -- agents -----------------------------------------------------------------------------
    def agent(self, agent_id: str) -> str:
        return self._k("agent", agent_id)

    def agent_field(self, field: str) -> str:
        """``tt:<town>:agent:*-><field>``: a ``SORT … GET`` pattern reading one field of each
        agent."""
        return self._k("agent", "*") + "->" + field

    @property
    def agents(self) -> str:
        return self._k("agents")

    def agents_in_state(self, state: str) -> str:
        return self._k("agents", "by_state", state)

    @property
    def agents_alive(self) -> str:
        """Agents in an active state, and agents stopped from outside while their worker still
        runs a task, scored by ``alive_until`` (ms, Redis clock): whose window ends first."""
        return self._k("agents", "alive_until")

    def agents_named(self, name: str) -> str:
        """The ids of agents with this name (lowercased): naming one reads only those."""
        return self._k("agents", "by_name", name.lower())

    def agents_called(self, ref: str) -> str:
        """The ids of agents with this nickname or 4-character short id (lowercased)."""
        return self._k("agents", "by_ref", ref.lower())

    @property
    def agents_refs_indexed(self) -> str:
        """Set once the two indexes above hold every agent (a town made before them)."""
        return self._k("agents", "refs_indexed")

    def legacy_agents_in_state(self, state: str) -> str:
        """Before liveness was indexed: a plain set per state (read once, to upgrade a town)."""
        return self._k("agents", "state", state)

    @property
    def agent_prefix(self) -> str:
        """What ``agent(id)`` puts before the id: for a Lua script that finds agent ids itself."""
        return self._k("agent", "")

    @property
    def keeper_lease(self) -> str:
        """Held by the one townhall process that recovers dead agents' work at a time."""
        return self._k("keeper", "lease")

    def inbox(self, agent_id: str) -> str:
        return self._k("inbox", agent_id)

    def urgent(self, agent_id: str) -> str:
        return self._k("urgent", agent_id)

    def activity(self, agent_id: str) -> str:
        return self._k("activity", agent_id)

    def stop(self, agent_id: str) -> str:
        return self._k("stop", agent_id)

    def control(self, agent_id: str) -> str:
        """A pub/sub channel, not a key: nudges to the agent's worker
        (``tinytown.store.control``)."""
        return self._k("control", agent_id)

    # -- tasks ------------------------------------------------------------------------------
    def task(self, task_id: str) -> str:
        return self._k("task", task_id)

    def task_output(self, task_id: str) -> str:
        """The task's CLI output as it runs (``tinytown.store.output``)."""
        return self._k("task", task_id, "output")

    def task_token(self, task_id: str) -> str:
        """The SHA-256 of the task token its running attempt's CLI holds (ours; it expires)."""
        return self._k("task_token", task_id)

    def page_session(self, digest: str) -> str:
        """A status-page log-in, named by its id's SHA-256 (ours; it expires)."""
        return self._k("page_session", digest)

    @property
    def page_sessions(self) -> str:
        """Every page session's digest, scored by its expiry (``tt auth end-sessions``)."""
        return self._k("page_sessions")

    @property
    def task_prefix(self) -> str:
        """What ``task(id)`` puts before the id: for a Lua script that finds task ids itself."""
        return self._k("task", "")

    @property
    def tasks(self) -> str:
        return self._k("tasks")

    def tasks_in_state(self, state: str) -> str:
        return self._k("tasks", "state", state)

    @property
    def backlog(self) -> str:
        return self._k("backlog")

    # -- docket and events ------------------------------------------------------------------
    @property
    def docket(self) -> str:
        return self._k("docket", "tasks")

    def agent_docket(self, agent_id: str) -> str:
        return self._k("docket", "agent", agent_id)

    @property
    def docket_events(self) -> str:
        return self._k("docket", "events")

    @property
    def events(self) -> str:
        return self._k("events")

    def agent_events(self, agent_id: str) -> str:
        return self._k("events", "agent", agent_id)

    def mission_event_stream(self, mission_id: str) -> str:
        return self._k("events", "mission", mission_id)

    @property
    def notify_outbox(self) -> str:
        return self._k("notify", "outbox")

    @property
    def notify_dead(self) -> str:
        return self._k("notify", "dead")

    @property
    def worker_seconds(self) -> str:
        """A float: seconds coding CLIs have run, all tasks (tinytown_worker_seconds_total)."""
        return self._k("worker_seconds")

    @property
    def samples(self) -> str:
        """The status page's chart: a capped stream of the town's counts over time."""
        return self._k("samples")

    @property
    def samples_lease(self) -> str:
        return self._k("samples", "lease")

    @property
    def broadcast(self) -> str:
        return self._k("broadcast")

    # -- missions ---------------------------------------------------------------------------
    def mission(self, mission_id: str) -> str:
        return self._k("mission", mission_id)

    @property
    def missions(self) -> str:
        return self._k("missions")

    @property
    def missions_active(self) -> str:
        return self._k("mission", "active")

    def mission_work(self, mission_id: str) -> str:
        return self._k("mission", mission_id, "work")

    def mission_watch(self, mission_id: str) -> str:
        return self._k("mission", mission_id, "watch")

    def mission_log(self, mission_id: str) -> str:
        return self._k("mission", mission_id, "events")

    def mission_control(self, mission_id: str) -> str:
        return self._k("mission", mission_id, "control")

    def mission_dispatch_lock(self, mission_id: str) -> str:
        return self._k("mission", mission_id, "dispatch_lock")

    def town_pattern(self) -> str:
        """``tt:<town>:*`` — for tests and ``tt reset`` only, never a hot path."""
        return self._k("*")
