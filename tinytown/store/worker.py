"""What an agent worker reads and writes about itself, each in one round trip.

The worker's loop (``agent_worker.py``) calls these; its heartbeat thread calls :meth:`beat` and
its control thread listens through :meth:`listener`.
"""

from __future__ import annotations

from dataclasses import dataclass

from tinytown.core.liveness import Beat
from tinytown.store.control import Listener
from tinytown.store.scripts import execute_pipelined

MESSAGES_PER_CHECK = 100  # inbox messages a control check looks at for a shutdown


@dataclass(frozen=True)
class Controls:
    """What the control check reads: the stop flag, the agent's state (None: the record is gone)
    and the first messages of both lists, ``(list key, raw)``, urgent first."""

    stop_requested: bool
    state: str | None
    messages: list[tuple[str, str]]


@dataclass(frozen=True)
class BeatReply:
    """What a heartbeat read: the agent's state (None: the record is gone), whether its stop
    flag is set, whether its urgent or inbox list holds messages, and while a task runs whether
    its entry is still this worker's and the task's state (None: deleted); both None while
    idle."""

    state: str | None
    stop_requested: bool
    has_messages: bool
    still_held: bool | None = None
    task_state: str | None = None


class WorkerStore:
    def __init__(self, town, agent_id: str, heartbeat_interval_secs: int):
        """``town``: the :class:`tinytown.store.Town` the worker serves."""
        self.town, self.r, self.keys = town, town.redis, town.keys
        self.agent_id, self.interval = agent_id, heartbeat_interval_secs

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

    def beat(self, docket, entry=None, interval_secs: int | None = None) -> BeatReply:
        """A heartbeat at ``interval_secs`` (its window: 3 of them; default: the working
        interval), which also reads the agent's state and whether its lists hold messages;
        while a task runs (``entry``: its entry on ``docket``, the worker's
        :class:`tinytown.store.docket.Docket`), it keeps the entry fresh and reads the task's
        state too. One round trip."""
        agents = self.town.agents

        def build(pipe):
            agents.queue_worker_beat(pipe, self.agent_id, interval_secs or self.interval)
            if entry is not None:
                docket.queue_keep_alive(pipe, entry)
                pipe.hget(self.keys.task(entry.task_id), "state")

        beat, *held = execute_pipelined(self.r, build, agents.scripts + docket.scripts)
        found = beat[0] == "ok"
        return BeatReply(
            state=beat[1] if found else None,
            stop_requested=found and int(beat[2]) > 0,
            has_messages=found and int(beat[3]) > 0,
            still_held=bool(held[0]) if held else None,
            task_state=held[1] if held else None,
        )

    def cli_started(
        self, task_id: str, started_at: str, *, pgid: int, host: str, taken: list[tuple[str, str]]
    ) -> tuple[str, str]:
        """Once the CLI runs: the task's ``started_at``, the agent ``working`` with its task and
        the CLI's process group and a heartbeat (its window the working one from now), and the
        messages its prompt carried off the inbox. Returns the
        agent move's ``(status, old state)``."""
        tasks, agents = self.town.tasks, self.town.agents

        def build(pipe):
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
                beat=Beat(self.interval),  # the working window from now (an idle one is longer)
                set_fields={
                    "current_task": task_id,
                    "last_active_at": started_at,
                    "cli_pgid": str(pgid),
                    "host": host,
                },
            )
            for key, raw in taken:
                self.town.inbox.queue_remove(pipe, key, raw)

        _, (status, old), *_ = execute_pipelined(self.r, build, tasks.scripts + agents.scripts)
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
