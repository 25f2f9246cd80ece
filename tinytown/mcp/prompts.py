"""MCP prompts, as upstream names them: the conductor's start-up context and an agent's role
hint, written from the town's state as the read operations see it."""

from __future__ import annotations

from tinytown import ops
from tinytown.core.errors import Problem
from tinytown.core.rpc import INVALID_PARAMS, RpcError
from tinytown.mcp.tools import protocol_error
from tinytown.ops.table import Caller
from tinytown.store import Town

PROMPTS = (
    {
        "name": "conductor.startup_context",
        "title": "Conductor start-up context",
        "description": "What the town is doing now and how to drive it with these tools.",
        "arguments": [],
    },
    {
        "name": "agent.role_hint",
        "title": "Role hint for an agent",
        "description": "Who an agent is, what it is doing and what it could take next.",
        "arguments": [
            {"name": "agent_name", "description": "the agent", "required": True},
            {"name": "tags", "description": "comma-separated task tags", "required": False},
        ],
    },
)


def get_prompt(town: Town, caller: Caller, name: object, arguments: object) -> dict:
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict) or not all(isinstance(v, str) for v in arguments.values()):
        raise RpcError(INVALID_PARAMS, "'arguments' must be an object of strings")
    try:
        if name == "conductor.startup_context":
            text = _startup_context(town, caller)
        elif name == "agent.role_hint":
            if not arguments.get("agent_name"):
                raise RpcError(INVALID_PARAMS, "agent.role_hint needs the 'agent_name' argument")
            text = _role_hint(town, caller, arguments["agent_name"], arguments.get("tags", ""))
        else:
            raise RpcError(INVALID_PARAMS, f"unknown prompt {str(name)[:80]!r}; see prompts/list")
    except Problem as err:
        raise protocol_error(err, INVALID_PARAMS) from None
    return {
        "description": next(p["description"] for p in PROMPTS if p["name"] == name),
        "messages": [{"role": "user", "content": {"type": "text", "text": text}}],
    }


def _startup_context(town: Town, caller: Caller) -> str:
    status = ops.run("town.get_status", town, {}, caller)
    backlog = ops.run("backlog.list", town, {"limit": 1}, caller)
    missions = ops.run("mission.list", town, {"active_only": True, "limit": 20}, caller)
    alive = [a for a in status["agents"] if a["alive"]]
    busy = [a for a in alive if a["current_scope"]]
    lines = [
        f"You are the conductor of the Tinytown town {status['name']!r}.",
        f"Agents: {status['agent_count']} registered, {len(alive)} alive, {len(busy)} busy.",
        f"Backlog: {backlog['count']} task(s) waiting for a worker.",
        f"Active missions: {missions['total']}.",
    ]
    for m in missions["missions"]:
        s = m["summary"]
        title = m.get("title") or m["id"]
        lines.append(
            f"- {title}: {m['state']}, {s['done']}/{s['total_work_items']} items done "
            f"(mission_id {m['id']})"
        )
    lines += [
        "",
        "To queue work: backlog.add {description}. To run a plan: mission.start {items} or "
        "{issues}. Watch with mission.get_status and task.get; answer a stuck mission with "
        "mission.note (resume, pause, 'redirect <item> to <agent>').",
    ]
    return "\n".join(lines)


def _role_hint(town: Town, caller: Caller, agent: str, tags: str) -> str:
    a = ops.run("agent.get", town, {"agent": agent}, caller)
    lines = [
        f"Agent {a['name']} ({a['id']}) runs the {a['cli']} CLI"
        + (f" as {a['role_id']}" if a["role_id"] else "")
        + f"; it is {a['state']} and {'alive' if a['alive'] else 'not alive'}.",
    ]
    if a["current_task"]:
        lines.append(f"It is working on task {a['current_task']}: {a['current_scope']}")
    else:
        lines.append("It has no task now; give it one with task.assign or backlog.claim.")
    wanted = [t.strip() for t in tags.split(",") if t.strip()]
    if wanted:
        lines.append(f"Prefer tasks tagged {', '.join(wanted)}.")
    lines.append(f"It has completed {a['tasks_completed']} task(s).")
    return "\n".join(lines)
