"""Managing agents and recovering their work (scope ``agent.manage``).

Registering or restarting an agent only changes its record (as upstream): workers are started by
the scaler or by hand, and adopt a record through ``TINYTOWN_AGENT_ID``.
"""

from __future__ import annotations

from tinytown import recovery
from tinytown.core import inputs
from tinytown.core.errors import Problem
from tinytown.core.records import RESERVED_AGENT_NAMES, is_uuid
from tinytown.core.states import PRUNABLE_AGENT_STATES
from tinytown.ops.args import field
from tinytown.ops.refs import agent_id_for, agent_named, agent_ref, cli_rule
from tinytown.ops.table import AGENT, MANAGE, boolean, operation, string
from tinytown.store import Town


@operation(
    "agent.spawn",
    MANAGE,
    "Register an agent record (a worker adopts it through TINYTOWN_AGENT_ID).",
    params={
        "name": string("a unique name"),
        "cli": string("a coding CLI this town configures (default: the town's)"),
        "role_id": string("a role, e.g. reviewer"),
        "nickname": string("a second name"),
        "parent_agent_id": string("the agent that spawned it (a UUID)"),
    },
    required=("name",),
    rest="POST /v1/agents",
    status=201,
)
def spawn_agent(t: Town, args: dict) -> dict:
    name = field(args, "name", str, required=True, rule=inputs.name)
    cli = field(args, "cli", str, rule=cli_rule(t)) or t.config.cli().name
    role_id = field(args, "role_id", str, rule=inputs.name)
    nickname = field(args, "nickname", str, rule=inputs.name)
    parent = field(args, "parent_agent_id", str, rule=inputs.reference)
    if name.strip().lower() in RESERVED_AGENT_NAMES:
        raise Problem(400, f"agent name {name!r} is reserved; choose another name", field="name")
    if parent is not None and not is_uuid(parent.lower()):
        raise Problem(
            400, f"Invalid parent_agent_id: {parent!r} is not a UUID", field="parent_agent_id"
        )
    agent = t.agents.register(
        name, cli, role_id=role_id, nickname=nickname, parent_agent_id=parent and parent.lower()
    )
    return {
        "agent_id": agent.id,
        "name": agent.name,
        "cli": agent.cli,
        "role_id": agent.role_id,
        "nickname": nickname,
        "parent_agent_id": agent.parent_agent_id,
    }


@operation(
    "agent.kill",
    MANAGE,
    "Ask an agent to stop (its worker stops after the current task).",
    params={"agent": AGENT},
    required=("agent",),
    rest="POST /v1/agents/{agent}/kill",
    destructive=True,
)
def kill_agent(t: Town, args: dict) -> dict:
    agent_id, _ = agent_named(t, args)
    t.agents.request_stop(agent_id)
    return {"status": "stopped", "agent": args["agent"]}


@operation(
    "agent.restart",
    MANAGE,
    "Put a stopped agent's record back to idle.",
    params={"agent": AGENT},
    required=("agent",),
    rest="POST /v1/agents/{agent}/restart",
)
def restart_agent(t: Town, args: dict) -> dict:
    agent_id, _ = agent_named(t, args)
    t.agents.restart(agent_id)
    return {"status": "restarted", "agent": args["agent"]}


@operation(
    "agent.pause",
    MANAGE,
    "Pause an agent: it takes no new work until resumed (a task it runs now runs to its end).",
    params={"agent": AGENT},
    required=("agent",),
    rest="POST /v1/agents/{agent}/pause",
)
def pause_agent(t: Town, args: dict) -> dict:
    agent_id, _ = agent_named(t, args)
    t.agents.pause(agent_id)
    return {"status": "paused", "agent": args["agent"]}


@operation(
    "agent.resume",
    MANAGE,
    "Resume a paused agent: it takes work again.",
    params={"agent": AGENT},
    required=("agent",),
    rest="POST /v1/agents/{agent}/resume",
)
def resume_agent(t: Town, args: dict) -> dict:
    agent_id, _ = agent_named(t, args)
    t.agents.resume(agent_id)
    return {"status": "resumed", "agent": args["agent"]}


@operation(
    "agent.prune",
    MANAGE,
    "Delete agents that are stopped or in error (all: every agent), except any whose worker "
    "may still run a task (listed as kept).",
    params={"all": boolean("delete every agent")},
    rest="POST /v1/agents/prune",
    destructive=True,
)
def prune_agents(t: Town, args: dict) -> dict:
    everyone = field(args, "all", bool, default=False)
    removed, kept = [], []
    now_ms = t.agents.now_ms()
    for agent in t.agents.all():
        if everyone or agent.state in PRUNABLE_AGENT_STATES:
            if recovery.in_use(agent, now_ms):
                kept.append(agent.name)
                continue
            t.agents.delete(agent.id)
            removed.append(agent.name)
    return {"removed": len(removed), "agents": removed, "kept": kept}


@operation(
    "recovery.recover_agents",
    MANAGE,
    "Mark agents without a heartbeat for several intervals stopped; their work is reclaimable.",
    rest="POST /v1/recover",
)
def recover(t: Town, args: dict) -> dict:
    return recovery.recover(t)


@operation(
    "recovery.reclaim_tasks",
    MANAGE,
    "Move the inbox messages of stopped agents to the backlog or to one agent; never drops one.",
    params={
        "to_backlog": boolean("move them to the backlog"),
        "to_agent": string("move them to this agent (REST: 'to')"),
        "from_agent": string("only from this agent (REST: 'from')"),
    },
    rest="POST /v1/reclaim",
)
def reclaim(t: Town, args: dict) -> dict:
    to_backlog = field(args, "to_backlog", bool, default=False)
    to_ref = agent_ref(args, "to" if "to" in args else "to_agent")
    from_ref = agent_ref(args, "from" if "from" in args else "from_agent")
    if to_backlog and to_ref:
        raise Problem(422, "give either 'to_backlog' or 'to', not both", field="to")
    for ref in (to_ref, from_ref):
        if ref:
            agent_id_for(t, ref)  # 404 for an unknown agent, before anything moves
    return recovery.reclaim(t, to_backlog=to_backlog, to_agent=to_ref, from_agent=from_ref)


@operation(
    "recovery.orphan_tasks",
    MANAGE,
    "Live tasks assigned to a missing or stopped agent: list them, or move them back to the "
    "backlog, cancel or delete them.",
    params={
        "action": string("what to do with them", enum=list(recovery.ORPHAN_ACTIONS), default="list")
    },
    rest="POST /v1/reclaim/orphan-tasks",
)
def orphan_tasks(t: Town, args: dict) -> dict:
    action = field(args, "action", str, default="list", rule=inputs.name)
    try:
        return recovery.orphan_tasks(t, action)
    except ValueError as err:
        raise Problem(400, str(err), field="action") from None
