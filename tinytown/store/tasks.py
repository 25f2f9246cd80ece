"""Task records: create (with their docket entry), read, list by state, and transitions.

A task is ``pending`` (unassigned, in the backlog and on the shared docket), ``assigned`` (aimed
at one agent, on that agent's docket), ``running``, then ``completed``, ``failed`` or
``cancelled``. Every transition is one Lua script that checks the current state, updates the
record and moves the id between the per-state index sets.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import chain

import redis

from tinytown.core import defaults
from tinytown.core import events as ev
from tinytown.core.clock import epoch_us, now, to_rfc3339
from tinytown.core.errors import InvalidTransition, NotFound
from tinytown.core.keys import Keys
from tinytown.core.records import Task, new_id
from tinytown.core.states import TASK, TASK_RUNNING, TASK_STATES
from tinytown.store import control, transaction
from tinytown.store.events import Events
from tinytown.store.scripts import TASK_DELETE, TASK_TRANSITION, queue_script
from tinytown.store.short_ids import resolve_reference, zset_members


@dataclass(frozen=True)
class Transition:
    """The outcome of a guarded transition: ``ok`` and the state it moved from."""

    status: str  # ok | missing | state | owner
    old_state: str
    entry_id: str = ""
    record: dict[str, str] | None = None  # the task's hash after a successful transition

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def parse_transition(reply: list) -> Transition:
    """The transition script's reply: ``{status, old[, entry id, flat task hash]}``."""
    status, old, *rest = reply
    if not rest:
        return Transition(status, old)
    flat = rest[1]
    return Transition(status, old, rest[0], dict(zip(flat[::2], flat[1::2])))


def ensure_group(r: redis.Redis, stream: str) -> None:
    """Create the ``workers`` group on ``stream`` (from its first entry), if missing."""
    try:
        r.xgroup_create(stream, defaults.DOCKET_GROUP, id="0", mkstream=True)
    except redis.ResponseError as err:
        if "BUSYGROUP" not in str(err):
            raise


def docket_fields(
    task_id: str, description: str, to: str = "", timestamp: str = ""
) -> dict[str, str]:
    """Docket entry fields, in upstream's RAK-compatible layout (spec §4.6)."""
    return {
        "task_id": task_id,
        "type": "task_assign",
        "message": description,
        "priority": "normal",
        "from": "supervisor",
        "to": to,
        "timestamp": timestamp or to_rfc3339(now()),
    }


class TaskStore:
    def __init__(self, r: redis.Redis, keys: Keys):
        self.r, self.keys = r, keys
        self.events = Events(r, keys)
        self._transition = r.register_script(TASK_TRANSITION)
        self.scripts = (self._transition,)  # for scripts.execute_pipelined after a cache loss
        self._delete = r.register_script(TASK_DELETE)
        self._groups_ready: set[str] = set()
        # the keys every submit writes, named once
        self._docket, self._tasks, self._backlog = keys.docket, keys.tasks, keys.backlog
        self._in_state = {s: keys.tasks_in_state(s) for s in TASK_STATES}

    # -- create -----------------------------------------------------------------------------

    def _ensure_group(self, stream: str) -> None:
        if stream not in self._groups_ready:
            ensure_group(self.r, stream)
            self._groups_ready.add(stream)

    def add(
        self,
        description: str,
        *,
        tags: Sequence[str] = (),
        agent_id: str | None = None,
        repo: str | None = None,
        base_branch: str | None = None,
        push: bool = False,
        cli: str | None = None,
        parent_id: str | None = None,
        mission_id: str | None = None,
        work_item_id: str | None = None,
        max_attempts: int | None = None,
        task_id: str | None = None,
    ) -> Task:
        """Create a task, its docket entry and its ``task_created`` event in one atomic step.

        Without ``agent_id`` it is ``pending``: in the backlog and on the shared docket, for any
        idle worker. With ``agent_id`` it is ``assigned`` and goes on that agent's own docket.
        ``task_id`` (a mission's task, whose id is derived from its work item) makes the call
        idempotent: if that task exists, nothing is written and the stored task is returned.
        """
        created = now()
        ts = to_rfc3339(created)
        idempotent, task_id = task_id is not None, task_id or new_id()
        state = TASK["submit_to_agent" if agent_id else "submit"].target
        record = Task.new_hash(
            task_id,
            description,
            state,
            ts,
            list(tags),
            assigned_to=agent_id,
            parent_id=parent_id,
            repo=repo,
            base_branch=base_branch,
            push=push,
            cli=cli,
            mission_id=mission_id,
            work_item_id=work_item_id,
            max_attempts=max_attempts,
        )
        stream = self.keys.agent_docket(agent_id) if agent_id else self._docket
        self._ensure_group(stream)
        score = epoch_us(created)
        commands = [
            ("HSET", self.keys.task(task_id), *chain.from_iterable(record.items())),
            ("ZADD", self._tasks, score, task_id),
            ("ZADD", self._in_state[state], score, task_id),
        ]
        if not agent_id:
            commands.append(("RPUSH", self._backlog, task_id))
        entry = docket_fields(task_id, description, agent_id or "", ts)
        fields = chain.from_iterable(entry.items())
        commands.append(("XADD", stream, "MAXLEN", "~", defaults.DOCKET_MAXLEN, "*", *fields))
        created_event = ev.event(
            ev.TASK_CREATED,
            f"task {task_id} created ({state})",
            ts,
            task_id=task_id,
            agent_id=agent_id,
            mission_id=mission_id,
            work_item_id=work_item_id,
            new_state=state,
        )
        commands += self.events.commands(created_event)
        if not idempotent:
            transaction.execute(self.r, commands)
            return Task.from_hash(record)  # (made once the entry is on its way)
        return self._add_once(Task.from_hash(record), commands)

    def _add_once(self, task: Task, commands: list) -> Task:
        """Run ``commands`` unless the task already exists (``WATCH`` on its key)."""
        key = self.keys.task(task.id)
        with self.r.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(key)
                    if pipe.exists(key):
                        pipe.unwatch()
                        return self.get(task.id)
                    pipe.multi()
                    for command in commands:
                        pipe.execute_command(*command)
                    pipe.execute()
                    return task
                except redis.WatchError:
                    continue

    # -- read -------------------------------------------------------------------------------

    def find(self, task_id: str) -> Task | None:
        data = self.r.hgetall(self.keys.task(task_id))
        return Task.from_hash(data) if data else None

    def get(self, task_id: str) -> Task:
        task = self.find(task_id)
        if task is None:
            raise NotFound(f"task {task_id} not found")
        return task

    def resolve(self, ref: str) -> str:
        """The task id ``ref`` names: its id, or a unique short id (its first 8 or more hex
        digits, as ``tt/<8 hex>`` branch names show; dashes may be left out).

        Cost: a full id costs no command. A short id reads the whole ``tasks`` index, 10 000 ids
        per ZRANGE: O(every task the town keeps) — an operator's command (``tt``), never a
        request, worker or scaling path. Raises NotFound when no task id begins with it and
        TinytownError naming the candidates when several do."""
        return resolve_reference("task", ref, lambda: zset_members(self.r, self.keys.tasks))

    def many(self, task_ids: Iterable[str]) -> list[Task | None]:
        """Records for ids in one round trip; None where a record is missing."""
        pipe = self.r.pipeline(transaction=False)
        ids = list(task_ids)
        for tid in ids:
            pipe.hgetall(self.keys.task(tid))
        return [Task.from_hash(d) if d else None for d in pipe.execute()] if ids else []

    def descriptions(self, task_ids: Iterable[str]) -> dict[str, str]:
        """Each existing task's description, one round trip."""
        ids = list(task_ids)
        if not ids:
            return {}
        pipe = self.r.pipeline(transaction=False)
        for tid in ids:
            pipe.hget(self.keys.task(tid), "description")
        return {tid: desc for tid, desc in zip(ids, pipe.execute()) if desc is not None}

    def ids_in_state(self, state: str) -> list[str]:
        """Every task id in ``state``, oldest first (an operator's read, not a hot path)."""
        return self.r.zrange(self.keys.tasks_in_state(state), 0, -1)

    def list(
        self, state: str | None = None, *, offset: int = 0, limit: int = 100
    ) -> tuple[list[Task], int]:
        """Tasks oldest first (optionally one state), a page of them, and the total count."""
        key = self.keys.tasks_in_state(state) if state else self.keys.tasks
        pipe = self.r.pipeline(transaction=False)
        pipe.zrange(key, offset, offset + limit - 1)
        pipe.zcard(key)
        ids, total = pipe.execute()
        return [t for t in self.many(ids) if t is not None], total

    def add_worker_seconds(self, secs: float) -> None:
        """Count what one CLI run took toward ``tinytown_worker_seconds_total``."""
        self.r.incrbyfloat(self.keys.worker_seconds, round(secs, 3))

    def queue_add_worker_seconds(self, pipe, secs: float) -> None:
        """Queue an :meth:`add_worker_seconds` on ``pipe``."""
        pipe.incrbyfloat(self.keys.worker_seconds, round(secs, 3))

    def worker_seconds_total(self) -> float:
        """Seconds coding CLIs have run in this town, every attempt of every task."""
        return float(self.r.get(self.keys.worker_seconds) or 0)

    def newest(self, state: str, limit: int) -> list[Task]:
        """The ``limit`` newest tasks in ``state``, newest first (the status page's failures)."""
        ids = self.r.zrevrange(self.keys.tasks_in_state(state), 0, limit - 1)
        return [t for t in self.many(ids) if t is not None]

    def counts(self) -> dict[str, int]:
        """Number of tasks in each state (``ZCARD`` per index: O(1) each)."""
        pipe = self.r.pipeline(transaction=False)
        for state in TASK_STATES:
            pipe.zcard(self.keys.tasks_in_state(state))
        return dict(zip(TASK_STATES, pipe.execute()))

    def backlog(self, *, offset: int = 0, limit: int = 100) -> tuple[list[str], int]:
        """Unassigned pending task ids in FIFO order, and how many there are."""
        pipe = self.r.pipeline(transaction=False)
        pipe.lrange(self.keys.backlog, offset, offset + limit - 1)
        pipe.llen(self.keys.backlog)
        ids, total = pipe.execute()
        return ids, total

    # -- transitions ------------------------------------------------------------------------

    def transition(self, task_id: str, move: str, **options) -> Transition:
        """Make the named move of the state table (``TASK[move]``): only from its source states
        (narrowed to ``expect``, the state the caller saw, if given), in one Lua step.

        ``assignee`` requires ``assigned_to`` to equal it. ``dispatch_to`` (an agent id) adds an
        entry for the task on that agent's docket in the same atomic step; ``redispatch`` does
        the same on the shared docket. Options as :meth:`transition_request`.
        """
        keys, args = self.transition_request(task_id, move, **options)
        if args[1] == ",":  # ``expect`` is not a state this move leaves from: nothing can happen
            return Transition("state", options["expect"])
        return parse_transition(self._transition(keys=keys, args=args))

    def queue_transition(self, pipe, task_id: str, move: str, **options) -> None:
        """Queue a :meth:`transition` on ``pipe`` (see ``scripts.execute_pipelined``); its reply
        goes through :func:`parse_transition`."""
        keys, args = self.transition_request(task_id, move, **options)
        queue_script(pipe, self._transition, keys, args)

    def transition_request(
        self,
        task_id: str,
        move: str,
        *,
        expect: str | None = None,
        set_fields: dict[str, str] | None = None,
        delete_fields: Iterable[str] = (),
        assignee: str = "",
        incr_attempts: bool = False,
        dispatch_to: str | None = None,
        redispatch: bool = False,
    ) -> tuple[list[str], list[str]]:
        """The transition script's keys and arguments."""
        rule = TASK[move]
        allowed = "," + ",".join(rule.narrowed(expect)) + ","
        set_fields = set_fields or {}
        delete_fields = list(delete_fields)
        # The script writes these itself after the fields given (and never deletes attempts).
        if owned := ({"state", "updated_at"} & set(set_fields)) | (
            {"state", "updated_at", "attempts"} & set(delete_fields)
        ):
            raise ValueError(f"a transition may not set or delete {', '.join(sorted(owned))}")
        stream = self.keys.agent_docket(dispatch_to) if dispatch_to else self.keys.docket
        xfields: list[str] = []
        if dispatch_to or redispatch:
            self._ensure_group(stream)
            task = self.find(task_id)
            if task is not None:
                for k, v in docket_fields(task.id, task.description, dispatch_to or "").items():
                    xfields += [k, v]
        keys = [self.keys.task(task_id), self.keys.tasks, self.keys.backlog, stream]
        keys += [self.keys.events] + [self.keys.tasks_in_state(s) for s in TASK_STATES]
        args: list[str] = [
            task_id,
            allowed,
            rule.target or "",
            to_rfc3339(now()),
            assignee,
            "1" if incr_attempts else "0",
        ]
        args += [str(len(xfields) // 2), str(len(set_fields)), str(len(delete_fields))]
        args += xfields
        for k, v in set_fields.items():
            args += [k, v]
        args += delete_fields
        return keys, args

    def _require(self, result: Transition, task_id: str, action: str) -> Transition:
        if result.status == "missing":
            raise NotFound(f"task {task_id} not found")
        if result.status == "state":
            raise InvalidTransition("task", task_id, result.old_state, action)
        if result.status == "owner":
            raise InvalidTransition("task", task_id, "assigned to another agent", action)
        return result

    def assign(self, task_id: str, agent_id: str) -> Transition:
        """Claim a pending backlog task for one agent: it moves to that agent's docket."""
        result = self.transition(
            task_id, "assign", set_fields={"assigned_to": agent_id}, dispatch_to=agent_id
        )
        return self._require(result, task_id, "claimed (only pending backlog tasks can be)")

    def complete(self, task_id: str, result: str = "", *, agent_id: str = "") -> Transition:
        """Mark a live task completed with its result."""
        outcome = self.transition(
            task_id,
            "complete",
            assignee=agent_id,
            set_fields={"result": result, "completed_at": to_rfc3339(now())},
        )
        return self._require(outcome, task_id, "completed")

    def fail(self, task_id: str, reason: str, *, agent_id: str = "") -> Transition:
        """Mark a live task failed with the reason; it stays listed under ``failed``."""
        outcome = self.transition(
            task_id,
            "fail",
            assignee=agent_id,
            set_fields={"result": reason, "completed_at": to_rfc3339(now())},
        )
        return self._require(outcome, task_id, "failed")

    def cancel(self, task_id: str, reason: str) -> Transition:
        """Mark a live task cancelled with the reason. The worker running it is nudged
        (``tinytown.store.control``) and stops its CLI at once — at its next heartbeat if the
        nudge is missed — leaving the state as it is; a queued docket entry is skipped."""
        outcome = self.transition(
            task_id, "cancel", set_fields={"result": reason, "completed_at": to_rfc3339(now())}
        )
        if (
            outcome.ok
            and outcome.old_state == TASK_RUNNING
            and (outcome.record or {}).get("assigned_to")
        ):
            control.publish(
                self.r, self.keys, outcome.record["assigned_to"], control.CANCEL, task_id
            )
        return self._require(outcome, task_id, "cancelled")

    def requeue(
        self,
        task_id: str,
        *,
        expect: str | None = None,
        assignee: str = "",
        to_agent: str | None = None,
        attempts: int | None = None,
        move: str | None = None,
        set_fields: dict[str, str] | None = None,
    ) -> Transition:
        """Put a live task back to work with a fresh docket entry, in one atomic step.

        With ``to_agent`` it is aimed at that agent (its own docket: ``reassign``); otherwise it
        waits for any worker again (``requeue``): unassigned, at the end of the backlog and on the
        shared docket. ``expect`` and ``assignee`` guard it as in :meth:`transition`;
        ``attempts`` sets the attempt count (with ``move="undo_claim"``: a claim undone before its
        CLI started). Old docket entries of the task are left alone: whoever reads one finds the
        task moved on and skips it. ``set_fields`` are written with it (what the attempt cost).
        """
        counted = {} if attempts is None else {"attempts": str(attempts)}
        counted.update(set_fields or {})
        if to_agent:
            return self.transition(
                task_id,
                move or "reassign",
                expect=expect,
                assignee=assignee,
                set_fields={"assigned_to": to_agent, **counted},
                delete_fields=("started_at",),
                dispatch_to=to_agent,
            )
        return self.transition(
            task_id,
            move or "requeue",
            expect=expect,
            assignee=assignee,
            set_fields=counted,
            delete_fields=("assigned_to", "started_at"),
            redispatch=True,
        )

    def _delete_record(self, task_id: str, allowed: str) -> tuple[str, str]:
        """``scripts.TASK_DELETE``: the record and its indexes, with its task_deleted event."""
        k = self.keys
        return self._delete(
            keys=[k.task(task_id), k.tasks, k.backlog, k.events]
            + [k.tasks_in_state(s) for s in TASK_STATES],
            args=[task_id, allowed, to_rfc3339(now())],
        )

    def delete(self, task_id: str) -> str:
        """Delete a task in any state from its record and every index. Returns the old state."""
        status, old = self._delete_record(task_id, "")
        if status == "missing":
            raise NotFound(f"task {task_id} not found")
        self.r.delete(self.keys.task_output(task_id))  # its output goes with it
        return old

    def remove_from_backlog(self, task_id: str) -> None:
        """Delete a pending task. Its docket entry stays; a worker that reads it skips and acks
        it."""
        status, old = self._delete_record(task_id, "," + ",".join(TASK["remove"].source) + ",")
        if status == "missing":
            raise NotFound(f"task {task_id} not found in backlog")
        if status == "state":
            raise InvalidTransition(
                "task",
                task_id,
                old,
                f"removed from the backlog (only {', '.join(TASK['remove'].source)} tasks are)",
            )
