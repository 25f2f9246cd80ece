"""Tasks, the backlog and messages: reading them (``town.read``), giving work (``town.write``)."""

from __future__ import annotations

from tinytown.core import defaults, inputs
from tinytown.core.errors import Problem
from tinytown.core.records import SUPERVISOR_ID, Task
from tinytown.core.states import TASK, TASK_STATES
from tinytown.ops.args import field, line, paging, required_text
from tinytown.ops.refs import agent_id_for, agent_ref, cli_rule, task_id
from tinytown.ops.table import (
    AGENT,
    PAGE,
    READ,
    TASK_ID,
    WRITE,
    boolean,
    operation,
    string,
    strings,
)
from tinytown.store import Town

TASK_OPTIONS = {
    "tags": strings("labels; a worker started with --tags takes only tasks carrying one of them"),
    "repo": string("a git repository the worker clones for this task"),
    "base_branch": string("the branch to start from (with repo)"),
    "push": boolean("push the worker's branch when the task completes"),
    "cli": string("a coding CLI this town configures (default: the town's)"),
}


def _task_options(t: Town, args: dict) -> dict:
    """The optional task fields a worker understands."""
    return {
        "tags": field(args, "tags", list, default=[], rule=inputs.tags),
        "repo": field(args, "repo", str, rule=inputs.repo),
        "base_branch": field(args, "base_branch", str, rule=inputs.branch),
        "push": field(args, "push", bool, default=False),
        "cli": field(args, "cli", str, rule=cli_rule(t)),
    }


# -- reading --------------------------------------------------------------------------------------


@operation(
    "task.list",
    READ,
    "Tasks, oldest first, optionally in one state.",
    params={"state": string("only tasks in this state", enum=list(TASK_STATES)), **PAGE},
    rest="GET /v1/tasks",
)
def list_tasks(t: Town, args: dict) -> dict:
    state = field(args, "state", str, rule=line)
    if state is not None:
        if state.lower() not in TASK_STATES:
            raise Problem(
                422,
                f"field 'state' must be one of {', '.join(TASK_STATES)} (any case), "
                f"got {inputs.printable(state)!r}",
                field="state",
            )
        state = state.lower()
    offset, limit = paging(args)
    tasks, total = t.tasks.list(state, offset=offset, limit=limit)
    return {
        "tasks": [task.to_json() for task in tasks],
        "count": len(tasks),
        "total": total,
        "offset": offset,
        "limit": limit,
    }


@operation(
    "task.get",
    READ,
    "One task: its state, result or error, attempts and cost.",
    params={"task_id": TASK_ID},
    required=("task_id",),
    rest="GET /v1/tasks/{task_id}",
)
def get_task(t: Town, args: dict) -> dict:
    return t.tasks.get(task_id(args)).to_json()


@operation(
    "task.list_pending",
    READ,
    "Tasks assigned to an agent and not started yet.",
    params=PAGE,
    rest="GET /v1/tasks/pending",
)
def pending_tasks(t: Town, args: dict) -> dict:
    offset, limit = paging(args)
    tasks, total = t.tasks.list(TASK["assign"].target, offset=offset, limit=limit)
    names = t.agents.names({task.assigned_to for task in tasks if task.assigned_to})
    rows = [
        {
            "task_id": task.id,
            "description": task.description,
            "agent_id": task.assigned_to,
            "agent_name": names.get(task.assigned_to or ""),
        }
        for task in tasks
    ]
    return {"tasks": rows, "count": total}


@operation(
    "backlog.list",
    READ,
    "Tasks waiting for any worker, oldest first.",
    params=PAGE,
    rest="GET /v1/backlog",
)
def backlog(t: Town, args: dict) -> dict:
    offset, limit = paging(args)
    ids, total = t.tasks.backlog(offset=offset, limit=limit)
    rows = []
    for tid, task in zip(ids, t.tasks.many(ids)):
        if task is None:
            rows.append({"task_id": tid, "description": "(task record not found)", "tags": []})
        else:
            rows.append({"task_id": tid, "description": task.description, "tags": task.tags})
    return {"backlog": rows, "count": total}


# -- giving work ----------------------------------------------------------------------------------


@operation(
    "task.assign",
    WRITE,
    "Give a task to one agent.",
    params={
        "agent": AGENT,
        "description": string("what to do (REST calls this field 'task')"),
        **TASK_OPTIONS,
    },
    required=("agent", "description"),
    rest="POST /v1/tasks/assign",
    status=201,
)
def assign_task(t: Town, args: dict) -> dict:
    ref = agent_ref(args, "agent", required=True)
    description = required_text(args, "task" if "task" in args else "description")
    options = _task_options(t, args)
    agent_id, _ = agent_id_for(t, ref)
    task = t.tasks.add(description, agent_id=agent_id, **options)
    return {"task_id": task.id, "agent_id": agent_id, "agent_name": ref}


@operation(
    "backlog.add",
    WRITE,
    "Queue a task for any worker (a sleeping town's scaler starts one).",
    params={"description": string("what to do"), **TASK_OPTIONS},
    required=("description",),
    rest="POST /v1/backlog",
    status=201,
)
def add_backlog(t: Town, args: dict) -> dict:
    description = required_text(args, "description")
    task = t.tasks.add(description, **_task_options(t, args))
    return {"task_id": task.id, "description": task.description}


@operation(
    "backlog.claim",
    WRITE,
    "Give a queued task to one agent.",
    params={"task_id": TASK_ID, "agent": AGENT},
    required=("task_id", "agent"),
    rest="POST /v1/backlog/{task_id}/claim",
)
def claim(t: Town, args: dict) -> dict:
    tid = task_id(args)
    ref = agent_ref(args, "agent", required=True)
    agent_id, _ = agent_id_for(t, ref)
    if t.tasks.find(tid) is None:
        raise Problem(404, f"Task {tid} not found in backlog")
    t.tasks.assign(tid, agent_id)
    return {"task_id": tid, "agent_id": agent_id, "agent_name": ref}


@operation(
    "backlog.assign_all",
    WRITE,
    "Give queued tasks to one agent, the oldest first, at most 1,000 a call (remaining: how "
    "many are left).",
    params={"agent": AGENT},
    required=("agent",),
    rest="POST /v1/backlog/assign-all",
)
def assign_all(t: Town, args: dict) -> dict:
    ref = agent_ref(args, "agent", required=True)
    agent_id, _ = agent_id_for(t, ref)
    assigned = []
    # a bounded batch: one request must not run past gunicorn's timeout, or flood the events
    ids, _ = t.tasks.backlog(limit=defaults.TOWNHALL_PAGE_LIMIT_MAX)
    for tid in ids:
        if t.tasks.transition(
            tid, "assign", set_fields={"assigned_to": agent_id}, dispatch_to=agent_id
        ).ok:
            assigned.append(tid)
    remaining = t.tasks.backlog(limit=1)[1]
    return {"assigned": len(assigned), "tasks": assigned, "remaining": remaining}


@operation(
    "backlog.remove",
    WRITE,
    "Take a task out of the backlog for good.",
    params={"task_id": TASK_ID},
    required=("task_id",),
    rest="DELETE /v1/backlog/{task_id}",
    destructive=True,
)
def remove_backlog(t: Town, args: dict) -> dict:
    tid = task_id(args)
    task = t.tasks.find(tid)
    if task is None or not TASK["remove"].allows(task.state):
        raise Problem(404, f"Task {tid} not found in backlog")
    t.tasks.remove_from_backlog(tid)
    return {"removed": True, "task_id": tid}


# -- reporting on a task --------------------------------------------------------------------------


def _guard_agent(t: Town, args: dict) -> str:
    """The optional ``agent`` a report names: it must be the task's assignee (id, or "" = any)."""
    ref = agent_ref(args, "agent")
    return agent_id_for(t, ref)[0] if ref else ""


def _reported(transition) -> dict:
    """The task as the transition left it (the script returns the record: no second read)."""
    return Task.from_hash(transition.record).to_json()


GUARD = string("if given, the report counts only while this agent holds the task")


@operation(
    "task.complete",
    WRITE,
    "Report a task done, with its result.",
    params={"task_id": TASK_ID, "result": string("what was done"), "agent": GUARD},
    required=("task_id",),
    rest="POST /v1/tasks/{task_id}/complete",
)
def complete_task(t: Town, args: dict) -> dict:
    tid = task_id(args)
    result = field(args, "result", str, default="")
    return _reported(t.tasks.complete(tid, result, agent_id=_guard_agent(t, args)))


@operation(
    "task.fail",
    WRITE,
    "Report a task failed, with the reason.",
    params={"task_id": TASK_ID, "reason": string("why it failed"), "agent": GUARD},
    required=("task_id",),
    rest="POST /v1/tasks/{task_id}/fail",
)
def fail_task(t: Town, args: dict) -> dict:
    tid = task_id(args)
    reason = (
        field(args, "reason", str, default="")
        or field(args, "error", str, default="")
        or "Marked failed via API"
    )
    return _reported(t.tasks.fail(tid, reason, agent_id=_guard_agent(t, args)))


@operation(
    "task.cancel",
    WRITE,
    "Stop a task for good; a worker running it stops its CLI at once.",
    params={"task_id": TASK_ID, "reason": string("why")},
    required=("task_id",),
    rest="POST /v1/tasks/{task_id}/cancel",
    destructive=True,
)
def cancel_task(t: Town, args: dict) -> dict:
    tid = task_id(args)
    reason = field(args, "reason", str, default="") or "Cancelled via API"
    return _reported(t.tasks.cancel(tid, reason))


@operation(
    "message.send",
    WRITE,
    "Send a message to an agent's inbox (or the conductor's).",
    params={
        "to": string("the agent (or 'conductor')"),
        "message": string("the text"),
        "from": string("the sender (default: the conductor)"),
        "kind": string("task, query, info or ack", enum=["task", "query", "info", "ack"]),
        "urgent": boolean("put it in the urgent inbox"),
    },
    required=("to", "message"),
    rest="POST /v1/messages/send",
    status=201,
)
def send_message(t: Town, args: dict) -> dict:
    to_ref = agent_ref(args, "to", required=True)
    text = field(args, "message", str, required=True)
    kind = field(args, "kind", str, default="task", rule=line)
    from_ref = agent_ref(args, "from")
    urgent = field(args, "urgent", bool, default=False)
    to_id, _ = agent_id_for(t, to_ref, allow_supervisor=True)
    sender = agent_id_for(t, from_ref, allow_supervisor=True)[0] if from_ref else SUPERVISOR_ID
    if kind not in ("task", "query", "info", "ack"):
        kind = "task"  # upstream: an unknown kind is a task
    message = t.inbox.send(to_id, text, kind=kind, sender=sender, urgent=urgent)
    return {"message_id": message["id"], "to_agent": to_id, "urgent": urgent}
