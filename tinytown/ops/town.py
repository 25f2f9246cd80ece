"""Reading the town (scope ``town.read``): its identity and status, agents and inboxes."""

from __future__ import annotations

from tinytown.connection.target import resolve_target
from tinytown.core import defaults, messages
from tinytown.core.states import TERMINAL_AGENT_STATES
from tinytown.ops.args import field
from tinytown.ops.refs import agent_id_for, agent_json, agent_named, as_is, current_scopes
from tinytown.ops.table import AGENT, READ, boolean, operation
from tinytown.store import Town


@operation(
    "town.info",
    READ,
    "The town's name, root directory and Redis address (no password).",
    rest="GET /v1/town",
)
def town_info(t: Town, args: dict) -> dict:
    cfg = t.config
    return {"name": cfg.name, "root": str(cfg.root), "redis_url": resolve_target(cfg).display}


@operation(
    "town.get_status",
    READ,
    "The town and every agent: state, liveness, current task, inbox lengths.",
    rest="GET /v1/status",
)
def status(t: Town, args: dict) -> dict:
    agents = t.agents.all()
    now_ms = t.agents.now_ms()
    scopes = current_scopes(t, agents)
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
    return {**town_info(t, {}), "agent_count": len(rows), "agents": rows}


def _agent_rows(t: Town, *, open_only: bool) -> dict:
    agents = t.agents.all()
    if open_only:
        agents = [a for a in agents if a.state not in TERMINAL_AGENT_STATES]
    now_ms = t.agents.now_ms()
    scopes = current_scopes(t, agents)
    rows = [
        {
            **agent_json(a, scopes.get(a.current_task or ""), now_ms),
            "last_heartbeat": a.last_heartbeat or None,
            "current_task": a.current_task,
        }
        for a in agents
    ]
    return {"agents": rows, "count": len(rows)}


@operation(
    "agent.list",
    READ,
    "Every agent with its state, liveness and current task.",
    params={"open": boolean("only agents that are not stopped or in error")},
    rest="GET /v1/agents",
)
def list_agents(t: Town, args: dict) -> dict:
    return _agent_rows(t, open_only=field(args, "open", bool, default=False))


@operation(
    "agent.list_open",
    READ,
    "Agents that are not stopped or in error (agent.list with open=true).",
    rest="GET /v1/agents?open=true",
)
def list_open_agents(t: Town, args: dict) -> dict:
    return _agent_rows(t, open_only=True)


@operation(
    "agent.get",
    READ,
    "One agent: its state, liveness, current task and counters.",
    params={"agent": AGENT},
    required=("agent",),
    rest="GET /v1/agents/{agent}",
)
def get_agent(t: Town, args: dict) -> dict:
    _, agent = agent_named(t, args)
    now_ms = t.agents.now_ms()
    scopes = current_scopes(t, [agent])
    return {
        **agent_json(agent, scopes.get(agent.current_task or ""), now_ms),
        "last_heartbeat": agent.last_heartbeat or None,
        "current_task": agent.current_task,
        "rounds_completed": agent.rounds_completed,
        "tasks_completed": agent.tasks_completed,
    }


@operation(
    "agent.inbox",
    READ,
    "An agent's inbox (or the conductor's): the first 100 messages, not consumed, and both "
    "lengths.",
    params={"agent": AGENT},
    required=("agent",),
    rest="GET /v1/agents/{agent}/inbox",
)
def inbox(t: Town, args: dict) -> dict:
    ref = field(args, "agent", str, required=True, rule=as_is)
    agent_id, _ = agent_id_for(t, ref, allow_supervisor=True)
    msgs, total, urgent = t.inbox.peek(agent_id, defaults.TOWNHALL_INBOX_PEEK)
    rows = []
    for m in msgs:
        kind, summary = messages.summarize(m)
        rows.append(
            {"id": m.get("id", ""), "from": m.get("from", ""), "type": kind, "summary": summary}
        )
    return {"agent": ref, "total": total, "urgent": urgent, "messages": rows}
