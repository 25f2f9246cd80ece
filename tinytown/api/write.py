"""Write routes (scope ``town.write``): tasks, backlog, messages, mission records."""

from __future__ import annotations

from flask import Blueprint

from tinytown.api.access import protect
from tinytown.api.common import (
    agent_id_for,
    agent_ref,
    cli_rule,
    missions,
    task_json,
    town,
    valid_mission_id,
)
from tinytown.api.problems import Problem
from tinytown.api.validation import field, json_body, line, required_text, uuid_param
from tinytown.core import defaults, inputs
from tinytown.core.records import SUPERVISOR_ID, Task
from tinytown.core.states import TASK, WORK_STATUSES
from tinytown.missions.start import start_mission as start

write = Blueprint("write", __name__)
protect(write, "town.write")


def _task_options(body: dict) -> dict:
    """The optional task fields a worker understands."""
    return {
        "tags": field(body, "tags", list, default=[], rule=inputs.tags),
        "repo": field(body, "repo", str, rule=inputs.repo),
        "base_branch": field(body, "base_branch", str, rule=inputs.branch),
        "push": field(body, "push", bool, default=False),
        "cli": field(body, "cli", str, rule=cli_rule),
    }


@write.post("/v1/tasks/assign")
def assign_task():
    body = json_body()
    ref = agent_ref(body, "agent", required=True)
    description = required_text(body, "task")
    options = _task_options(body)
    agent_id, _ = agent_id_for(ref)
    task = town().tasks.add(description, agent_id=agent_id, **options)
    return {"task_id": task.id, "agent_id": agent_id, "agent_name": ref}, 201


@write.post("/v1/backlog")
def add_backlog():
    body = json_body()
    description = required_text(body, "description")
    task = town().tasks.add(description, **_task_options(body))
    return {"task_id": task.id, "description": task.description}, 201


@write.post("/v1/backlog/<task_id>/claim")
def claim(task_id: str):
    task_id = uuid_param(task_id, "task id")
    ref = agent_ref(json_body(), "agent", required=True)
    agent_id, _ = agent_id_for(ref)
    if town().tasks.find(task_id) is None:
        raise Problem(404, f"Task {task_id} not found in backlog")
    town().tasks.assign(task_id, agent_id)
    return {"task_id": task_id, "agent_id": agent_id, "agent_name": ref}


@write.post("/v1/backlog/assign-all")
def assign_all():
    ref = agent_ref(json_body(), "agent", required=True)
    agent_id, _ = agent_id_for(ref)
    t = town()
    assigned = []
    ids, _ = t.tasks.backlog(limit=2**31)
    for tid in ids:
        if t.tasks.transition(
            tid, "assign", set_fields={"assigned_to": agent_id}, dispatch_to=agent_id
        ).ok:
            assigned.append(tid)
    return {"assigned": len(assigned), "tasks": assigned}


@write.delete("/v1/backlog/<task_id>")
def remove_backlog(task_id: str):
    task_id = uuid_param(task_id, "task id")
    task = town().tasks.find(task_id)
    if task is None or not TASK["remove"].allows(task.state):
        raise Problem(404, f"Task {task_id} not found in backlog")
    town().tasks.remove_from_backlog(task_id)
    return {"removed": True, "task_id": task_id}


def _guard_agent(body: dict | None) -> str:
    """The optional ``agent`` a report names: it must be the task's assignee (id, or "" = any)."""
    ref = agent_ref(body, "agent")
    return agent_id_for(ref)[0] if ref else ""


def _reported(transition) -> dict:
    """The task as the transition left it (the script returns the record: no second read)."""
    return task_json(Task.from_hash(transition.record))


@write.post("/v1/tasks/<task_id>/complete")
def complete_task(task_id: str):
    """A coding CLI (or anyone) reports success; ``agent`` optionally guards the assignee."""
    task_id = uuid_param(task_id, "task id")
    body = json_body(optional=True)
    result = field(body, "result", str, default="")
    return _reported(town().tasks.complete(task_id, result, agent_id=_guard_agent(body)))


@write.post("/v1/tasks/<task_id>/fail")
def fail_task(task_id: str):
    task_id = uuid_param(task_id, "task id")
    body = json_body(optional=True)
    reason = (
        field(body, "reason", str, default="")
        or field(body, "error", str, default="")
        or "Marked failed via API"
    )
    return _reported(town().tasks.fail(task_id, reason, agent_id=_guard_agent(body)))


@write.post("/v1/tasks/<task_id>/cancel")
def cancel_task(task_id: str):
    """Stop a task for good; a worker running it is nudged and stops its CLI at once."""
    task_id = uuid_param(task_id, "task id")
    reason = field(json_body(optional=True), "reason", str, default="") or "Cancelled via API"
    return _reported(town().tasks.cancel(task_id, reason))


@write.post("/v1/messages/send")
def send_message():
    body = json_body()
    to_ref = agent_ref(body, "to", required=True)
    text = field(body, "message", str, required=True)
    kind = field(body, "kind", str, default="task", rule=line)
    from_ref = agent_ref(body, "from")
    urgent = field(body, "urgent", bool, default=False)
    to_id, _ = agent_id_for(to_ref, allow_supervisor=True)
    sender = agent_id_for(from_ref, allow_supervisor=True)[0] if from_ref else SUPERVISOR_ID
    if kind not in ("task", "query", "info", "ack"):
        kind = "task"  # upstream: an unknown kind is a task
    message = town().inbox.send(to_id, text, kind=kind, sender=sender, urgent=urgent)
    return {"message_id": message["id"], "to_agent": to_id, "urgent": urgent}, 201


# -- mission records --------------------------------------------------------------------------


def _objective(i: int, value) -> dict:
    name = f"objectives[{i}]"
    if not isinstance(value, dict) or value.get("type") not in ("issue", "doc"):
        raise Problem(
            422, f'field {name!r} must be an object with type "issue" or "doc"', field=name
        )
    if value["type"] == "doc":
        path = field(value, "path", str, required=True, rule=line)
        if not path.strip():
            raise Problem(422, f"field '{name}.path' must not be empty", field=f"{name}.path")
        return {"type": "doc", "path": path}
    for key, kind in (("owner", str), ("repo", str), ("number", int)):
        if not isinstance(value.get(key), kind) or isinstance(value.get(key), bool):
            raise Problem(
                422,
                f"field '{name}.{key}' is required for an issue objective",
                field=f"{name}.{key}",
            )
    return {
        "type": "issue",
        "owner": inputs.name(value["owner"], f"{name}.owner"),
        "repo": inputs.name(value["repo"], f"{name}.repo"),
        "number": inputs.integer(value["number"], f"{name}.number", 1, 2**31 - 1),
    }


@write.post("/v1/missions")
def start_mission():
    """A mission of work items and/or upstream's objectives (issue and document references,
    compiled through ``gh`` on townhall's machine when it is installed)."""
    body = json_body()
    title = field(body, "title", str, rule=line)
    raw = body.get("objectives")
    if raw is not None and (
        not isinstance(raw, list) or len(raw) > defaults.MISSION_MAX_OBJECTIVES
    ):
        raise Problem(
            422,
            "field 'objectives' must be an array of at most "
            f"{defaults.MISSION_MAX_OBJECTIVES} issue or doc references",
            field="objectives",
        )
    objectives = [_objective(i, v) for i, v in enumerate(raw or [])]
    if not objectives and not body.get("items"):
        raise Problem(
            422,
            "a mission needs 'items' (work items) or 'objectives' (issue and doc references)",
            field="items",
        )
    mission, warnings = start(
        town(),
        items=body.get("items"),
        objectives=objectives,
        policy=body.get("policy"),
        title=title,
        cli_rule=cli_rule,
        cwd=town().config.root,
        budget_secs=defaults.MISSION_GH_BUDGET_SECS,
    )
    out = {
        "mission_id": mission.id,
        "state": mission.state,
        "objective_count": len(objectives),
        "work_items": missions().summary(mission.id)["total_work_items"],
    }
    if warnings:
        out["warnings"] = warnings
    return out, 201


@write.patch("/v1/missions/<mission_id>/work/<work_item_id>")
def update_work_item(mission_id: str, work_item_id: str):
    mid = valid_mission_id(mission_id)
    body = json_body()
    status = field(body, "status", str, rule=line)
    if status is not None and status not in WORK_STATUSES:
        raise Problem(
            422, f"field 'status' must be one of {', '.join(WORK_STATUSES)}", field="status"
        )
    artifacts = field(body, "artifacts", list, rule=_artifacts)
    return missions().update_work_item(mid, work_item_id, status=status, artifacts=artifacts)


@write.post("/v1/missions/<mission_id>/watches/<watch_id>/snooze")
def snooze_watch(mission_id: str, watch_id: str):
    mid = valid_mission_id(mission_id)
    duration = field(json_body(), "duration_secs", int, required=True, low=60, high=30 * 86400)
    return missions().snooze_watch(mid, watch_id, duration)


def _artifacts(values: list[str], name: str) -> list[str]:
    if len(values) > defaults.INPUT_MAX_TAGS:
        raise Problem(
            422,
            f"field {name!r} has {len(values)} entries; at most {defaults.INPUT_MAX_TAGS}",
            field=name,
        )
    return [line(v, f"{name}[{i}]") for i, v in enumerate(values)]
