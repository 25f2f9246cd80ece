"""The A2A methods, each a few of the town's operations run for the caller.

- **SendMessage** (``message/send``) runs the skill's operation (:mod:`.messages`) and answers at
  once: the new Task, submitted (coding tasks take minutes to hours; poll GetTask), or for
  ``status`` a Message. A message naming a ``taskId`` is refused: the town does not continue a
  task with more messages (UnsupportedOperation; TaskNotFound if there is no such task).
- **GetTask** (``tasks/get``) reads a task, else a mission, by id.
- **CancelTask** (``tasks/cancel``) cancels a task (``town.write``), else stops a mission by
  force (``agent.manage``); one that has already ended is TaskNotCancelable.
- **ListTasks** (1.0 only) pages through tasks in the order they were created (so a page token
  stays good while new tasks arrive).

Streaming, push notifications and the extended card are not offered (the card says so), and
their methods answer the matching A2A error. The caller's scopes are checked by each operation,
so a denial is the sentence REST gives.
"""

from __future__ import annotations

import re
from typing import Any

from tinytown.a2a import errors
from tinytown.a2a.errors import A2AError, from_problem, invalid
from tinytown.a2a.messages import read_send
from tinytown.a2a.skills import CODING_TASK, MISSION
from tinytown.a2a.views import TASK_STATE, mission_view, task_view
from tinytown.a2a.wire import Dialect, dialect_of, verb_of
from tinytown.core import defaults
from tinytown.core.errors import Problem
from tinytown.core.inputs import type_name
from tinytown.ops import run
from tinytown.ops.args import field
from tinytown.ops.refs import as_is
from tinytown.ops.table import Caller
from tinytown.store import Town

MUTATING_VERBS = ("send", "cancel")
SERVED_VERSION = re.compile(r"^(0\.3|1)(\.\d+){0,2}$")
LIST_PAGE_SIZE_DEFAULT = 50
LIST_PAGE_SIZE_MAX = min(100, defaults.TOWNHALL_PAGE_LIMIT_MAX)


def mutating(method: str) -> bool:
    """Whether the method may change the town (its calls are audited whatever their outcome)."""
    return verb_of(method) in MUTATING_VERBS


def serve(
    method: str, params: dict, town: Town, caller: Caller, *, version: str | None = None
) -> Any:
    """The result of A2A call ``method`` with ``params`` for ``caller``; :class:`A2AError` if it
    cannot be done. ``version``: the request's ``A2A-Version`` header, if it sent one."""
    if version and not SERVED_VERSION.match(version.strip()):
        raise A2AError(
            errors.VERSION_NOT_SUPPORTED,
            f"A2A version {version.strip()[:20]!r} is not served here; this agent speaks 1.0 "
            "and 0.3",
        )
    d, verb = dialect_of(method), verb_of(method)
    if verb == "send":
        return _send(d, params, town, caller)
    if verb == "get":
        kind, record = _lookup(town, caller, _id(params))
        return task_view(d, record) if kind == "task" else mission_view(d, record)
    if verb == "cancel":
        return _cancel(d, params, town, caller)
    if verb == "list":
        return _list(d, params, town, caller)
    if verb == "stream":
        raise A2AError(
            errors.UNSUPPORTED_OPERATION,
            f"{method}: streaming is not supported (the card says streaming: false); send the "
            "message with SendMessage (message/send) and poll GetTask (tasks/get)",
        )
    if verb == "push":
        raise A2AError(
            errors.PUSH_NOT_SUPPORTED,
            f"{method}: push notifications are not supported; poll GetTask (tasks/get)",
        )
    if verb == "extended_card":
        raise A2AError(
            errors.EXTENDED_CARD_NOT_CONFIGURED,
            f"{method}: there is no extended card; the public card at "
            "/.well-known/agent-card.json is the whole card",
        )
    raise A2AError(
        errors.METHOD_NOT_FOUND,
        f"no method {method[:100]!r}; this agent answers SendMessage, GetTask, CancelTask, "
        "ListTasks (A2A 1.0) and message/send, tasks/get, tasks/cancel (A2A 0.3)",
        status=404,
    )


def _run(name: str, town: Town, args: dict, caller: Caller | None, **mapping) -> dict:
    try:
        return run(name, town, args, caller)
    except Problem as problem:
        raise from_problem(problem, **mapping) from None


def _id(params: dict) -> str:
    try:
        return field(params, "id", str, required=True, rule=as_is)
    except Problem as problem:
        raise from_problem(problem) from None


def _not_found(ident: str) -> str:
    return f"no task or mission {ident} in this town"


def _lookup(town: Town, caller: Caller, ident: str) -> tuple[str, dict]:
    """("task", the task) or ("mission", its status) for an A2A task id."""
    try:
        return "task", run("task.get", town, {"task_id": ident}, caller)
    except Problem as problem:
        if problem.status != 404:
            raise from_problem(problem) from None
    status = _run(
        "mission.get_status",
        town,
        {"mission_id": ident, "include_watches": False},
        caller,
        not_found=errors.TASK_NOT_FOUND,
        message=_not_found(ident),
    )
    return "mission", status


def _send(d: Dialect, params: dict, town: Town, caller: Caller) -> dict:
    order = read_send(params)
    if order.task_id is not None:
        kind, record = _lookup(town, caller, order.task_id)
        state = (record.get("state") if kind == "task" else record["mission"].get("state")) or ""
        raise A2AError(
            errors.UNSUPPORTED_OPERATION,
            f"{kind} {order.task_id} is {str(state).lower()}; this town does not continue a "
            "task with more messages: send a new message without taskId for new work, or "
            "GetTask (tasks/get) to read this one",
            field="taskId",
        )
    out = _run(order.skill.operation, town, order.args, caller)
    if order.skill is CODING_TASK:
        task = _run("task.get", town, {"task_id": out["task_id"]}, None)
        return d.sent(task_view(d, task), is_task=True)
    if order.skill is MISSION:
        args = {"mission_id": out["mission_id"], "include_watches": False}
        return d.sent(mission_view(d, _run("mission.get_status", town, args, None)), is_task=True)
    message = d.message([d.data_part(out)], context_id=order.context_id)
    return d.sent(message, is_task=False)


def _cancel(d: Dialect, params: dict, town: Town, caller: Caller) -> dict:
    ident = _id(params)
    kind, _ = _lookup(town, caller, ident)  # which it is decides the scope the cancel needs
    not_cancelable = {"not_found": errors.TASK_NOT_FOUND, "conflict": errors.TASK_NOT_CANCELABLE}
    if kind == "task":
        args = {"task_id": ident, "reason": f"Cancelled over A2A by {caller.id}"}
        return task_view(d, _run("task.cancel", town, args, caller, **not_cancelable))
    _run("mission.stop", town, {"mission_id": ident, "force": True}, caller, **not_cancelable)
    args = {"mission_id": ident, "include_watches": False}
    return mission_view(d, _run("mission.get_status", town, args, None))


def _list(d: Dialect, params: dict, town: Town, caller: Caller) -> dict:
    """ListTasks: ``pageSize``, ``pageToken`` (an offset we gave), ``status``, and
    ``includeArtifacts``; a filter this town cannot apply is refused, never ignored."""
    try:
        limit = field(
            params, "pageSize", int, default=LIST_PAGE_SIZE_DEFAULT, low=1, high=LIST_PAGE_SIZE_MAX
        )
        token = field(params, "pageToken", str, default="", rule=as_is)
        with_artifacts = field(params, "includeArtifacts", bool, default=False)
    except Problem as problem:
        raise from_problem(problem) from None
    if token and not (token.isascii() and token.isdigit() and len(token) <= 18):
        raise invalid("'pageToken' must be a nextPageToken this agent gave", "pageToken")
    for unsupported in ("contextId", "statusTimestampAfter"):
        if params.get(unsupported):
            raise invalid(f"listing by {unsupported!r} is not supported here", unsupported)
    args: dict[str, Any] = {"offset": int(token or 0), "limit": limit}
    if params.get("status") not in (None, "", "TASK_STATE_UNSPECIFIED"):
        args["state"] = _our_state(d, params["status"])
    page = _run("task.list", town, args, caller)
    offset, tasks = args["offset"], page["tasks"]
    more = offset + len(tasks) < page["total"]
    return {
        "tasks": [task_view(d, t, with_artifacts=with_artifacts) for t in tasks],
        "nextPageToken": str(offset + len(tasks)) if more else "",
        "pageSize": limit,
        "totalSize": page["total"],
    }


def _our_state(d: Dialect, value: Any) -> str:
    """The one task state of ours an A2A state filter names."""
    state = d.parse_state(value) if isinstance(value, str) else None
    ours = [s for s, theirs in TASK_STATE.items() if theirs == state]
    if len(ours) != 1:
        shown = value if isinstance(value, str) else type_name(value)
        raise invalid(
            f"'status' {str(shown)[:60]!r} cannot be listed here: give one of "
            + ", ".join(d.state(s) for s in sorted(set(TASK_STATE.values())) if _one(s)),
            "status",
        )
    return ours[0]


def _one(state: str) -> bool:
    return list(TASK_STATE.values()).count(state) == 1
