"""Read routes (scope ``town.read``): town, agents, tasks, backlog, inboxes, missions.

Each view gathers its path and query values and runs its operation (:mod:`tinytown.ops`), the
same code MCP tools and A2A run.
"""

from __future__ import annotations

from flask import Blueprint, request

from tinytown.api.access import protect
from tinytown.api.common import run
from tinytown.api.feed import event_cursor
from tinytown.api.problems import Problem
from tinytown.api.validation import page, query_bool, query_int
from tinytown.core import defaults
from tinytown.core.states import TASK_STATES, WORK_STATUSES

read = Blueprint("read", __name__)
protect(read, "town.read")


def _paged(**args) -> dict:
    offset, limit = page()
    return {**args, "offset": offset, "limit": limit}


def _choice(name: str, choices: tuple[str, ...]) -> str | None:
    """A query parameter naming one of ``choices`` (any case); 422 naming it otherwise."""
    raw = request.args.get(name)
    if raw is not None and raw.lower() not in choices:
        raise Problem(
            422,
            f"query parameter {name!r} must be one of {', '.join(choices)} (any case), got {raw!r}",
            field=name,
        )
    return raw


@read.get("/v1/town")
def town_info():
    return run("town.info")


@read.get("/v1/status")
def status():
    """Town and every agent with its inbox lengths (``deep`` accepted and ignored, as upstream)."""
    return run("town.get_status")


@read.get("/v1/agents")
def list_agents():
    return run("agent.list", open=query_bool("open"))


@read.get("/v1/agents/<agent>")
def get_agent(agent: str):
    return run("agent.get", agent=agent)


@read.get("/v1/tasks")
def list_tasks():
    return run("task.list", **_paged(state=_choice("state", TASK_STATES)))


@read.get("/v1/tasks/pending")
def pending_tasks():
    """Tasks assigned to an agent and not yet started (upstream listed inbox task messages)."""
    return run("task.list_pending", **_paged())


@read.get("/v1/tasks/<task_id>")
def get_task(task_id: str):
    return run("task.get", task_id=task_id)


@read.get("/v1/backlog")
def backlog():
    return run("backlog.list", **_paged())


@read.route("/v1/agents/<agent>/inbox", methods=["GET", "POST"])
def inbox(agent: str):
    """The first 100 regular messages (peeked, not consumed) and both inbox lengths."""
    return run("agent.inbox", agent=agent)


# -- missions ---------------------------------------------------------------------------------


@read.get("/v1/missions")
def list_missions():
    return run("mission.list", **_paged(active_only=query_bool("active_only")))


@read.get("/v1/missions/<mission_id>")
def show_mission(mission_id: str):
    return run(
        "mission.get_status",
        mission_id=mission_id,
        include_work=query_bool("include_work", True),
        include_watches=query_bool("include_watches", True),
        include_events=query_bool("include_events", False),
    )


@read.get("/v1/missions/<mission_id>/work")
def mission_work(mission_id: str):
    return run("mission.list_work", mission_id=mission_id, status=_choice("status", WORK_STATUSES))


@read.get("/v1/missions/<mission_id>/work/<work_item_id>")
def mission_work_item(mission_id: str, work_item_id: str):
    return run("mission.get_work_item", mission_id=mission_id, work_item_id=work_item_id)


@read.get("/v1/missions/<mission_id>/watches")
def mission_watches(mission_id: str):
    return run("mission.list_watches", mission_id=mission_id)


@read.get("/v1/missions/<mission_id>/events")
def mission_events(mission_id: str):
    """The mission's own event stream (oldest first, after ``after``) and its log lines."""
    return run(
        "mission.get_events",
        mission_id=mission_id,
        after=event_cursor(),
        limit=query_int("limit", 50, 1, defaults.EVENTS_PAGE_MAX),
    )
