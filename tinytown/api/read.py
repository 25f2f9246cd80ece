"""Read routes (scope ``town.read``): town, agents, tasks, backlog, inboxes, missions."""

from __future__ import annotations

from flask import Blueprint, request

from tinytown.api.access import protect
from tinytown.api.common import (
    agent_id_for,
    agent_json,
    current_scopes,
    missions,
    task_json,
    town,
    valid_mission_id,
)
from tinytown.api.feed import NEWEST, event_cursor
from tinytown.api.problems import Problem
from tinytown.api.validation import page, query_bool, query_int, uuid_param
from tinytown.connection.target import resolve_target
from tinytown.core import defaults, messages
from tinytown.core.states import TASK, TASK_STATES, WORK_STATUSES

read = Blueprint("read", __name__)
protect(read, "town.read")


@read.get("/v1/town")
def town_info():
    cfg = town().config
    return {"name": cfg.name, "root": str(cfg.root), "redis_url": resolve_target(cfg).display}


@read.get("/v1/status")
def status():
    """Town and every agent with its inbox lengths (``deep`` accepted and ignored, as upstream)."""
    t = town()
    agents = t.agents.all()
    now_ms = t.agents.now_ms()
    scopes = current_scopes(agents)
    rows = []
    for a, (inbox_len, urgent_len) in zip(agents, t.inbox.lengths(a.id for a in agents)):
        row = agent_json(a, scopes.get(a.current_task or ""), now_ms)
        row.update(
            rounds_completed=a.rounds_completed,
            tasks_completed=a.tasks_completed,
            inbox_len=inbox_len,
            urgent_len=urgent_len,
        )
        rows.append(row)
    info = town_info()
    return {**info, "agent_count": len(rows), "agents": rows}


@read.get("/v1/agents")
def list_agents():
    agents = town().agents.all()
    now_ms = town().agents.now_ms()
    scopes = current_scopes(agents)
    rows = [
        {
            **agent_json(a, scopes.get(a.current_task or ""), now_ms),
            "last_heartbeat": a.last_heartbeat or None,
            "current_task": a.current_task,
        }
        for a in agents
    ]
    return {"agents": rows, "count": len(rows)}


@read.get("/v1/tasks")
def list_tasks():
    state = request.args.get("state")
    if state is not None:
        state = state.lower()
        if state not in TASK_STATES:
            raise Problem(
                422,
                f"query parameter 'state' must be one of {', '.join(TASK_STATES)} "
                f"(any case), got {request.args['state']!r}",
                field="state",
            )
    offset, limit = page()
    tasks, total = town().tasks.list(state, offset=offset, limit=limit)
    return {
        "tasks": [task_json(t) for t in tasks],
        "count": len(tasks),
        "total": total,
        "offset": offset,
        "limit": limit,
    }


@read.get("/v1/tasks/pending")
def pending_tasks():
    """Tasks assigned to an agent and not yet started (upstream listed inbox task messages)."""
    t = town()
    offset, limit = page()
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


@read.get("/v1/tasks/<task_id>")
def get_task(task_id: str):
    return task_json(town().tasks.get(uuid_param(task_id, "task id")))


@read.get("/v1/backlog")
def backlog():
    t = town()
    offset, limit = page()
    ids, total = t.tasks.backlog(offset=offset, limit=limit)
    rows = []
    for tid, task in zip(ids, t.tasks.many(ids)):
        if task is None:
            rows.append({"task_id": tid, "description": "(task record not found)", "tags": []})
        else:
            rows.append({"task_id": tid, "description": task.description, "tags": task.tags})
    return {"backlog": rows, "count": total}


@read.route("/v1/agents/<agent>/inbox", methods=["GET", "POST"])
def inbox(agent: str):
    """The first 100 regular messages (peeked, not consumed) and both inbox lengths."""
    agent_id, _ = agent_id_for(agent, allow_supervisor=True)
    msgs, total, urgent = town().inbox.peek(agent_id, defaults.TOWNHALL_INBOX_PEEK)
    rows = []
    for m in msgs:
        kind, summary = messages.summarize(m)
        rows.append(
            {"id": m.get("id", ""), "from": m.get("from", ""), "type": kind, "summary": summary}
        )
    return {"agent": agent, "total": total, "urgent": urgent, "messages": rows}


# -- missions ---------------------------------------------------------------------------------


@read.get("/v1/missions")
def list_missions():
    offset, limit = page()
    found, total = missions().list(
        active_only=query_bool("active_only"), offset=offset, limit=limit
    )
    summaries = missions().summaries([m.id for m in found])
    return {
        "missions": [{**m.data, "summary": summaries[m.id]} for m in found],
        "count": len(found),
        "total": total,
    }


@read.get("/v1/missions/<mission_id>")
def show_mission(mission_id: str):
    mid = valid_mission_id(mission_id)
    store = missions()
    mission = store.get(mid)
    return {
        "mission": mission.data,
        "work_items": store.work_items(mid) if query_bool("include_work", True) else [],
        "watches": store.watches(mid) if query_bool("include_watches", True) else [],
        "events": town().events.latest(defaults.MISSION_EVENTS_SHOWN, mid)
        if query_bool("include_events", False)
        else [],
        "summary": store.summary(mid),
    }


@read.get("/v1/missions/<mission_id>/work")
def mission_work(mission_id: str):
    mid = valid_mission_id(mission_id)
    status = request.args.get("status")
    if status is not None:
        status = status.lower()  # any case, as ?state= of /v1/tasks
        if status not in WORK_STATUSES:
            raise Problem(
                422,
                f"query parameter 'status' must be one of {', '.join(WORK_STATUSES)} "
                f"(any case), got {request.args['status']!r}",
                field="status",
            )
    missions().get(mid)
    items = missions().work_items(mid, status)
    return {"work_items": items, "count": len(items)}


@read.get("/v1/missions/<mission_id>/work/<work_item_id>")
def mission_work_item(mission_id: str, work_item_id: str):
    mid = valid_mission_id(mission_id)
    missions().get(mid)
    return missions().work_item(mid, work_item_id)


@read.get("/v1/missions/<mission_id>/watches")
def mission_watches(mission_id: str):
    mid = valid_mission_id(mission_id)
    missions().get(mid)
    watches = missions().watches(mid)
    return {"watches": watches, "count": len(watches)}


@read.get("/v1/missions/<mission_id>/events")
def mission_events(mission_id: str):
    """The mission's own event stream (oldest first, after ``after``) and its log lines."""
    mid = valid_mission_id(mission_id)
    missions().get(mid)
    after = event_cursor()
    if after == NEWEST:
        after = town().events.last_id(mid)
    limit = query_int("limit", 50, 1, defaults.EVENTS_PAGE_MAX)
    events = town().events.read(after, limit, mission_id=mid)
    return {
        "events": events,
        "count": len(events),
        "next_after": events[-1]["id"] if events else after,
        "log": missions().log_lines(mid, 50),
    }
