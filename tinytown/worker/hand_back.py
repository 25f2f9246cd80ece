"""A task the worker leaves before it finished, and how it goes back to work.

- :func:`give_back`: claimed but never started (the worker was told to stop as the read brought
  it, or before its CLI started): back to the backlog at once, the attempt not counted, the
  entry acknowledged.
- :func:`leave_unfinished`: its CLI ran and was stopped (a drain timeout): work in progress
  pushed, and the task left for another worker. A shared-docket entry stays held, for another
  worker to take over once it has been idle ``claim_timeout_secs``. An entry on this agent's own
  stream has no other reader, so its task goes back to the backlog at once (or is failed past
  ``max_attempts``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from tinytown.core.errors import TinytownError
from tinytown.core.records import Task
from tinytown.recovery import return_held_entries
from tinytown.store import Town
from tinytown.store.docket import Docket, Entry
from tinytown.worker import workspace
from tinytown.worker.workspace import Workspace


class WorkerState(Protocol):
    """What handing a task back reads and sets on the worker (``agent_worker.Worker``)."""

    town: Town
    agent_id: str
    docket: Docket
    with_redis: Callable[..., object]  # a tinytown.worker.retry.RedisRetry
    stopping: str  # read: why the worker is leaving
    held: Entry | None  # set to None: the entry is no longer this worker's to keep fresh
    name: str  # the agent's name, in its commits

    def log(self, event: str, **fields) -> None: ...


def give_back(w: WorkerState, task: Task, entry: Entry, ws: Workspace | None = None) -> None:
    """A claimed task whose CLI never started: back to the backlog, uncounted; entry acked."""
    if ws is not None:  # (made before the stop was seen: nothing ran in it)
        ws.close()
    requeue, uncounted = w.town.tasks.requeue, task.attempts - 1
    w.with_redis(
        "give_back", requeue, task.id, move="undo_claim", assignee=w.agent_id, attempts=uncounted
    )
    w.with_redis("ack", w.docket.ack, entry)
    w.held = None
    w.log("task_given_back", task=task.id, entry=entry.entry_id, reason=w.stopping)


def leave_unfinished(w: WorkerState, task: Task, ws: Workspace | None) -> None:
    """A task whose CLI was stopped before it finished: work in progress pushed, the task left
    for another worker (see the module's docstring)."""
    if ws is not None:
        push_wip(w, task, ws)
    entry = w.held
    to = "backlog" if entry is not None and entry.directed else "reclaim"
    if to == "backlog":
        w.with_redis("hand_back", return_held_entries, w.town, entry.stream, w.agent_id)
    entry_id = entry.entry_id if entry else None
    w.log(
        "task_handed_back",
        task=task.id,
        entry=entry_id,
        attempt=task.attempts,
        reason="drain_timeout",
        to=to,
    )
    w.held = None  # no longer refreshed: a shared entry is reclaimable after the timeout


def push_wip(w: WorkerState, task: Task, ws: Workspace) -> None:
    """Commit and push the work in progress of a task left unfinished, so that the next attempt
    continues from it; the branch and commit are recorded on the task."""
    try:
        head = workspace.commit(ws, task, agent_name=w.name, push=True, wip=True)
        wip = {"branch": ws.branch, "commit": head}
        record = w.town.tasks.transition
        w.with_redis("record_wip", record, task.id, "record", assignee=w.agent_id, set_fields=wip)
        w.log("wip_pushed", task=task.id, branch=ws.branch, commit=head)
    except TinytownError as err:
        w.log("wip_push_failed", task=task.id, detail=str(err))
    finally:
        ws.close()
