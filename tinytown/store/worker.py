"""What an agent worker reads and writes about itself, each in one round trip.

The worker's loop (``agent_worker.py``) calls these; its heartbeat thread calls :meth:`beat` and
its control thread listens through :meth:`listener`.
"""

from __future__ import annotations

from dataclasses import dataclass

from tinytown.store.control import Listener
from tinytown.store.scripts import execute_pipelined
from tinytown.store.task_tokens import TaskTokens

MESSAGES_PER_CHECK = 100  # inbox messages a control check looks at for a shutdown


@dataclass(frozen=True)
class Controls:
    """What the control check reads: the stop flag, the agent's state (None: the record is gone)
    and the first messages of both lists, ``(list key, raw)``, urgent first."""

    stop_requested: bool
    state: str | None
    messages: list[tuple[str, str]]


class WorkerStore:
    def __init__(self, town, agent_id: str, heartbeat_interval_secs: int):
        """``town``: the :class:`tinytown.store.Town` the worker serves."""
        self.town, self.r, self.keys = town, town.redis, town.keys
        self.agent_id, self.interval = agent_id, heartbeat_interval_secs
        self.tokens = TaskTokens(self.r, self.keys)  # its tasks' tokens (made once, not per task)

    def controls(self) -> Controls:
        pipe = self.r.pipeline(transaction=False)
        pipe.get(self.keys.stop(self.agent_id))
        pipe.hget(self.keys.agent(self.agent_id), "state")
        lists = self.town.inbox.lists(self.agent_id)
        for key in lists:
            pipe.lrange(key, 0, MESSAGES_PER_CHECK - 1)
        stop_flag, state, *raws = pipe.execute()
        return Controls(
            bool(stop_flag), state, [(key, raw) for key, rs in zip(lists, raws) for raw in rs]
        )

    def clear_stop(self) -> None:
        self.r.delete(self.keys.stop(self.agent_id))

    def beat(self, docket, entry=None) -> tuple[bool, str | None] | None:
        """A heartbeat; while a task runs (``entry``: its entry on ``docket``, the worker's
        :class:`tinytown.store.docket.Docket`), also keep the entry fresh and read the task's
        state. Returns ``(still held, task state)`` then, else None."""
        agents = self.town.agents

        def build(pipe):
            agents.queue_heartbeat(pipe, self.agent_id, self.interval)
            if entry is not None:
                docket.queue_keep_alive(pipe, entry)
                pipe.hget(self.keys.task(entry.task_id), "state")

        replies = execute_pipelined(self.r, build, agents.scripts + docket.scripts)
        return (bool(replies[1]), replies[2]) if entry is not None else None

    def cli_started(
        self,
        task_id: str,
        started_at: str,
        *,
        pgid: int,
        host: str,
        taken: list[tuple[str, str]],
        token: tuple[str, int] | None = None,
    ) -> tuple[str, str]:
        """Once the CLI runs: its task token stored (``(token, ttl secs)``), the task's
        ``started_at``, the agent ``working`` with its task and the CLI's process group, and the
        messages its prompt carried off the inbox. Returns the agent move's ``(status, old
        state)``."""
        tasks, agents = self.town.tasks, self.town.agents

        def build(pipe):
            if token is not None:
                self.tokens.queue_issue(pipe, task_id, *token)
            tasks.queue_transition(
                pipe,
                task_id,
                "record",
                assignee=self.agent_id,
                set_fields={"started_at": started_at},
            )
            agents.queue_update(
                pipe,
                self.agent_id,
                "work",
                set_fields={
                    "current_task": task_id,
                    "last_active_at": started_at,
                    "cli_pgid": str(pgid),
                    "host": host,
                },
            )
            for key, raw in taken:
                self.town.inbox.queue_remove(pipe, key, raw)

        replies = execute_pipelined(self.r, build, tasks.scripts + agents.scripts)
        status, old = replies[2 if token is not None else 1]
        return status, old

    def count_round(self, *, completed: bool) -> None:
        pipe = self.r.pipeline(transaction=False)
        pipe.hincrby(self.keys.agent(self.agent_id), "rounds_completed", 1)
        if completed:
            pipe.hincrby(self.keys.agent(self.agent_id), "tasks_completed", 1)
        pipe.execute()

    def cli_of(self, holder: str) -> tuple[str | None, str | None]:
        """``(host, cli_pgid)`` another agent recorded while its CLI ran."""
        host, pgid = self.r.hmget(self.keys.agent(holder), "host", "cli_pgid")
        return host, pgid

    def listener(self) -> Listener:
        return Listener(self.r, self.keys, self.agent_id)

    def ping(self) -> bool:
        return bool(self.r.ping())
