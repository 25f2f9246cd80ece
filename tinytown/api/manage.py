"""Agent-management routes (scope ``agent.manage``): agents, recovery, mission lifecycle.

Each view reads its body and runs its operation (:mod:`tinytown.ops`) with the path's values.
"""

from __future__ import annotations

from flask import Blueprint

from tinytown.api.access import protect
from tinytown.api.common import run
from tinytown.api.validation import json_body, query_bool

manage = Blueprint("manage", __name__)
protect(manage, "agent.manage")


@manage.post("/v1/agents")
def spawn_agent():
    return run("agent.spawn", json_body())


@manage.post("/v1/agents/<agent>/kill")
def kill_agent(agent: str):
    return run("agent.kill", agent=agent)


@manage.post("/v1/agents/<agent>/restart")
def restart_agent(agent: str):
    return run("agent.restart", agent=agent)


@manage.post("/v1/agents/<agent>/pause")
def pause_agent(agent: str):
    return run("agent.pause", agent=agent)


@manage.post("/v1/agents/<agent>/resume")
def resume_agent(agent: str):
    return run("agent.resume", agent=agent)


@manage.post("/v1/agents/prune")
def prune_agents():
    return run("agent.prune", json_body(optional=True))


@manage.post("/v1/recover")
def recover():
    json_body(optional=True)
    return run("recovery.recover_agents")


@manage.post("/v1/reclaim")
def reclaim():
    return run("recovery.reclaim_tasks", json_body(optional=True))


@manage.post("/v1/reclaim/orphan-tasks")
def orphan_tasks():
    return run("recovery.orphan_tasks", json_body(optional=True))


# -- mission lifecycle ------------------------------------------------------------------------


@manage.post("/v1/missions/<mission_id>/stop")
def stop_mission(mission_id: str):
    return run("mission.stop", json_body(optional=True), mission_id=mission_id)


@manage.post("/v1/missions/<mission_id>/resume")
def resume_mission(mission_id: str):
    json_body(optional=True)
    return run("mission.resume", mission_id=mission_id)


@manage.post("/v1/missions/<mission_id>/complete")
def complete_mission(mission_id: str):
    json_body(optional=True)
    return run("mission.complete", mission_id=mission_id)


@manage.post("/v1/missions/<mission_id>/fail")
def fail_mission(mission_id: str):
    return run("mission.fail", json_body(optional=True), mission_id=mission_id)


@manage.delete("/v1/missions/<mission_id>")
def delete_mission(mission_id: str):
    return run("mission.delete", mission_id=mission_id, force=query_bool("force"))


@manage.post("/v1/missions/<mission_id>/notes")
def note_mission(mission_id: str):
    """A note for the mission's dispatcher (upstream's control message): ``resume``/``retry``,
    ``pause``/``hold``, ``redirect [<item key>] to <agent>``, or anything else for the log."""
    return run("mission.note", json_body(), mission_id=mission_id)
