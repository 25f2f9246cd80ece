"""Agent-management routes (scope ``agent.manage``): agents, recovery, mission lifecycle.

Registering or restarting an agent here only changes its record (as upstream): workers are
started by the scaler or by hand, and adopt a record through ``TINYTOWN_AGENT_ID``.
"""

from __future__ import annotations

from flask import Blueprint

from tinytown.api.access import protect
from tinytown.api.common import agent_id_for, agent_ref, cli_rule, missions, town, valid_mission_id
from tinytown.api.problems import Problem
from tinytown.api.validation import field, json_body, query_bool, required_text
from tinytown.core import inputs
from tinytown.core.records import RESERVED_AGENT_NAMES, is_uuid
from tinytown.core.states import MISSION, PRUNABLE_AGENT_STATES

manage = Blueprint("manage", __name__)
protect(manage, "agent.manage")


@manage.post("/v1/agents")
def spawn_agent():
    body = json_body()
    name = field(body, "name", str, required=True, rule=inputs.name)
    cli = field(body, "cli", str, rule=cli_rule) or town().config.cli().name
    role_id = field(body, "role_id", str, rule=inputs.name)
    nickname = field(body, "nickname", str, rule=inputs.name)
    parent = field(body, "parent_agent_id", str, rule=inputs.reference)
    if name.strip().lower() in RESERVED_AGENT_NAMES:
        raise Problem(400, f"agent name {name!r} is reserved; choose another name", field="name")
    if parent is not None and not is_uuid(parent.lower()):
        raise Problem(
            400, f"Invalid parent_agent_id: {parent!r} is not a UUID", field="parent_agent_id"
        )
    agent = town().agents.register(
        name, cli, role_id=role_id, nickname=nickname, parent_agent_id=parent and parent.lower()
    )
    return {
        "agent_id": agent.id,
        "name": agent.name,
        "cli": agent.cli,
        "role_id": agent.role_id,
        "nickname": nickname,
        "parent_agent_id": agent.parent_agent_id,
    }, 201


@manage.post("/v1/agents/<agent>/kill")
def kill_agent(agent: str):
    agent_id, _ = agent_id_for(agent)
    town().agents.request_stop(agent_id)
    return {"status": "stopped", "agent": agent}


@manage.post("/v1/agents/<agent>/restart")
def restart_agent(agent: str):
    agent_id, _ = agent_id_for(agent)
    town().agents.restart(agent_id)
    return {"status": "restarted", "agent": agent}


@manage.post("/v1/agents/prune")
def prune_agents():
    """Delete agents that are stopped or in error (``all``: every agent)."""
    everyone = field(json_body(optional=True), "all", bool, default=False)
    t = town()
    removed = []
    for agent in t.agents.all():
        if everyone or agent.state in PRUNABLE_AGENT_STATES:
            t.agents.delete(agent.id)
            removed.append(agent.name)
    return {"removed": len(removed), "agents": removed}


# -- recovery (tinytown.recovery does the work) ------------------------------------------------


def _recovery():
    try:
        from tinytown import recovery
    except ImportError:  # pragma: no cover - only while the module is being written
        raise Problem(501, "recovery is not available in this build") from None
    return recovery


@manage.post("/v1/recover")
def recover():
    """Agents without a heartbeat for several intervals are marked stopped; their work is
    reclaimable."""
    json_body(optional=True)
    return _recovery().recover(town())


@manage.post("/v1/reclaim")
def reclaim():
    """Move the inbox messages of terminal agents to the backlog or an agent; never discards one."""
    body = json_body(optional=True)
    to_backlog = field(body, "to_backlog", bool, default=False)
    to_ref = agent_ref(body, "to")
    from_ref = agent_ref(body, "from")
    if to_backlog and to_ref:
        raise Problem(422, "give either 'to_backlog' or 'to', not both", field="to")
    for ref in (to_ref, from_ref):
        if ref:
            agent_id_for(ref)  # 404 for an unknown agent, before anything moves
    return _recovery().reclaim(town(), to_backlog=to_backlog, to_agent=to_ref, from_agent=from_ref)


@manage.post("/v1/reclaim/orphan-tasks")
def orphan_tasks():
    action = field(json_body(optional=True), "action", str, default="list", rule=inputs.name)
    try:
        return _recovery().orphan_tasks(town(), action)
    except ValueError as err:
        raise Problem(400, str(err), field="action") from None


# -- mission lifecycle ------------------------------------------------------------------------


@manage.post("/v1/missions/<mission_id>/stop")
def stop_mission(mission_id: str):
    mid = valid_mission_id(mission_id)
    force = field(json_body(optional=True), "force", bool, default=False)
    mission = missions().stop(mid, force=force)
    return {"id": mid, "state": mission.state}


@manage.post("/v1/missions/<mission_id>/resume")
def resume_mission(mission_id: str):
    mid = valid_mission_id(mission_id)
    json_body(optional=True)
    mission, old = missions().resume(mid)
    out = {"id": mid, "state": mission.state}
    if old == MISSION["resume"].target:
        out["note"] = "already running"
    return out


@manage.post("/v1/missions/<mission_id>/complete")
def complete_mission(mission_id: str):
    mid = valid_mission_id(mission_id)
    json_body(optional=True)
    mission, old = missions().complete(mid)
    out = {"id": mid, "state": mission.state}
    if old == MISSION["complete"].target:
        out["note"] = "already completed"
    return out


@manage.post("/v1/missions/<mission_id>/fail")
def fail_mission(mission_id: str):
    mid = valid_mission_id(mission_id)
    reason = field(json_body(optional=True), "reason", str) or "Marked failed via API"
    mission = missions().fail(mid, reason)
    return {"id": mid, "state": mission.state, "reason": reason}


@manage.delete("/v1/missions/<mission_id>")
def delete_mission(mission_id: str):
    mid = valid_mission_id(mission_id)
    missions().delete(mid, force=query_bool("force"))
    return {"id": mid, "deleted": True}


@manage.post("/v1/missions/<mission_id>/notes")
def note_mission(mission_id: str):
    """A note for the mission's dispatcher (upstream's control message): ``resume``/``retry``,
    ``pause``/``hold``, ``redirect [<item key>] to <agent>``, or anything else for the log."""
    mid = valid_mission_id(mission_id)
    body = json_body()
    text = required_text(body, "body")
    sender = field(body, "sender", str, rule=inputs.name) or "conductor"
    note = missions().add_note(mid, sender, text)
    return note, 201
