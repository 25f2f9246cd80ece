"""``tt agent list|show|kill|restart|pause|resume|prune``: the town's agents, alive or dead by
their own heartbeats, and what REST's ``/v1/agents/{agent}/kill|restart|pause|resume`` and
``/v1/agents/prune`` do."""

from __future__ import annotations

import argparse
from dataclasses import fields

from tinytown import recovery
from tinytown.cli.common import (
    AGENT,
    add_json_flag,
    guard_redis,
    open_town,
    print_fields,
    print_json,
    print_table,
    resolve_agent,
    short,
)
from tinytown.core.records import Agent
from tinytown.core.states import AGENT as AGENT_MOVES
from tinytown.core.states import (
    AGENT_ERROR_STATE,
    PRUNABLE_AGENT_STATES,
    TERMINAL_AGENT_STATES,
    rest_state,
)
from tinytown.store import Town

AGENT_REF_HELP = "agent id, name, nickname, or short id (the first 8 or more hex digits)"
SHORT_ID_SHOWN = 8  # hex digits of an id in tables (`tt` accepts them back)
# Hidden from `tt agent list` without --all: agents that left (an agent in error stays shown).
LEFT_STATES = tuple(s for s in TERMINAL_AGENT_STATES if s != AGENT_ERROR_STATE)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "agent",
        help="list, show, kill, restart, pause, resume or prune agents",
        description="The town's agents: each one's state, whether its worker still beats "
        "(alive) or has missed its heartbeats (dead), and its current task.",
    )
    asub = p.add_subparsers(dest="agent_command", metavar="ACTION", required=True)

    ls = asub.add_parser(
        "list",
        help="list agents: state, alive or dead, task, last heartbeat",
        description="List agents by name: short id, state, alive or dead (judged by each "
        "agent's own heartbeat interval), current task and the age of its last heartbeat. "
        "Stopped agents are left out unless --all.",
    )
    ls.add_argument("--all", action="store_true", help="also agents that stopped")
    add_json_flag(ls)
    ls.set_defaults(func=cmd_list)

    s = asub.add_parser(
        "show",
        help="print every field of one agent",
        description="Print every field of one agent's record, with its liveness.",
    )
    s.add_argument("agent", type=AGENT, help=AGENT_REF_HELP)
    add_json_flag(s)
    s.set_defaults(func=cmd_show)

    k = asub.add_parser(
        "kill",
        help="stop an agent (its worker leaves: at once if idle, after its task if working)",
        description="Mark an agent stopped and ask its worker to leave, as POST "
        "/v1/agents/{agent}/kill does: an idle worker exits at once, a working one after its "
        "current task.",
    )
    k.add_argument("agent", type=AGENT, help=AGENT_REF_HELP)
    k.set_defaults(func=cmd_kill)

    r = asub.add_parser(
        "restart",
        help="set an agent's record back to idle (as REST restart; starts no process)",
        description="As POST /v1/agents/{agent}/restart: the record goes back to idle with a "
        "heartbeat now, rounds_completed 0 and the stop request cleared. It starts no process: "
        "a worker adopts the record with TINYTOWN_AGENT_ID.",
    )
    r.add_argument("agent", type=AGENT, help=AGENT_REF_HELP)
    r.set_defaults(func=cmd_restart)

    for action, short_help, func in (
        ("pause", "stop an agent taking new work until resumed", cmd_pause),
        ("resume", "let a paused agent take work again", cmd_resume),
    ):
        pa = asub.add_parser(
            action,
            help=short_help,
            description=f"As POST /v1/agents/{{agent}}/{action}: "
            + (
                "the agent takes no new work until resumed; a task its CLI runs now runs to its "
                "end."
                if action == "pause"
                else "a paused agent takes work again (idle, or working while its CLI still "
                "runs a task)."
            ),
        )
        pa.add_argument("agent", type=AGENT, help=AGENT_REF_HELP)
        pa.set_defaults(func=func)

    pr = asub.add_parser(
        "prune",
        help="delete stopped and failed agents (--all: also dead ones)",
        description="Delete the records of agents that are stopped or in error (a stopped "
        "agent whose worker still finishes a task is kept). With --all, dead agents (no "
        "heartbeat within their window) are recovered first, as `tt recover` does, their work "
        "going back to the backlog, and deleted too.",
    )
    pr.add_argument(
        "--all", action="store_true", help="also agents that are dead (after recovering them)"
    )
    add_json_flag(pr)
    pr.set_defaults(func=cmd_prune)


# -- reading ------------------------------------------------------------------------------------


def liveness(agent: Agent, now_ms: int) -> str:
    """``alive`` or ``dead`` for an agent whose worker should beat; ``-`` once it has left."""
    if not agent.active:
        return "-"
    return "alive" if agent.alive(now_ms) else "dead"


def age_text(secs: float | None) -> str:
    """``4 s ago``, ``12 min ago``, ``3 h ago``, ``2 d ago``; ``never``."""
    if secs is None:
        return "never"
    for unit, size, up_to in (("s", 1, 120), ("min", 60, 7200), ("h", 3600, 172800)):
        if secs < up_to:
            return f"{int(secs // size)} {unit} ago"
    return f"{int(secs // 86400)} d ago"


def agent_json(agent: Agent, now_ms: int) -> dict:
    """REST's shape of an agent (``GET /v1/agents``): capitalised state, liveness."""
    out = {f.name: getattr(agent, f.name) for f in fields(agent)}
    out.update(
        state=rest_state(agent.state),
        alive=agent.alive(now_ms),
        heartbeat_age_secs=agent.heartbeat_age_secs(now_ms),
        heartbeat_interval_secs=agent.heartbeat_interval_secs or None,
        last_heartbeat=agent.last_heartbeat or None,
    )
    return out


@guard_redis
def cmd_list(args: argparse.Namespace) -> int:
    town = open_town(args)
    everyone = town.agents.all()
    now_ms = town.agents.now_ms()
    shown = [a for a in everyone if args.all or a.state not in LEFT_STATES]
    shown.sort(key=lambda a: (a.name.lower(), a.id))
    if args.json:
        print_json({"agents": [agent_json(a, now_ms) for a in shown], "count": len(shown)})
        return 0
    hidden = len(everyone) - len(shown)
    if not shown:
        print("No agents" + (f" ({hidden} stopped; --all shows them)" if hidden else ""))
        return 0
    rows = [
        [
            a.name,
            a.id[:SHORT_ID_SHOWN],
            a.state,
            liveness(a, now_ms),
            (a.current_task or "-")[:SHORT_ID_SHOWN],
            age_text(a.heartbeat_age_secs(now_ms)),
        ]
        for a in shown
    ]
    print_table(rows, ["NAME", "ID", "STATE", "LIVENESS", "TASK", "LAST HEARTBEAT"])
    if hidden:
        print(f"({hidden} stopped agent(s) not shown; --all shows them)")
    return 0


@guard_redis
def cmd_show(args: argparse.Namespace) -> int:
    town = open_town(args)
    agent = resolve_agent(town, args.agent)
    now_ms = town.agents.now_ms()
    if args.json:
        print_json(agent_json(agent, now_ms))
        return 0
    record = {}
    for f in fields(agent):
        record[f.name] = getattr(agent, f.name)
        if f.name == "state":
            record["liveness"] = liveness(agent, now_ms)
    record["last_heartbeat"] = (
        f"{agent.last_heartbeat} ({age_text(agent.heartbeat_age_secs(now_ms))})"
        if agent.last_heartbeat
        else "never"
    )
    record["alive_until"] = None  # the index's score; liveness says what it means
    if agent.current_task:
        found = town.tasks.descriptions([agent.current_task]).get(agent.current_task)
        if found:
            record["current_task"] = f"{agent.current_task} ({short(found)})"
    print_fields(record)
    return 0


# -- changes ------------------------------------------------------------------------------------


@guard_redis
def cmd_kill(args: argparse.Namespace) -> int:
    town = open_town(args)
    agent = resolve_agent(town, args.agent)
    previous = town.agents.request_stop(agent.id)
    if previous == AGENT_MOVES["kill"].target:
        print(f"Agent {agent.name} ({agent.id[:SHORT_ID_SHOWN]}) was already stopped")
        return 0
    print(
        f"Stopped agent {agent.name} ({agent.id[:SHORT_ID_SHOWN]}, was {previous}); its worker "
        "leaves at once if idle, after its current task if working"
    )
    return 0


@guard_redis
def cmd_restart(args: argparse.Namespace) -> int:
    town = open_town(args)
    agent = resolve_agent(town, args.agent)
    previous = town.agents.restart(agent.id)
    print(
        f"Restarted agent {agent.name} ({agent.id[:SHORT_ID_SHOWN]}, was {previous}): idle, "
        "stop request cleared; a worker adopts it with TINYTOWN_AGENT_ID"
    )
    return 0


@guard_redis
def cmd_pause(args: argparse.Namespace) -> int:
    town = open_town(args)
    agent = resolve_agent(town, args.agent)
    previous = town.agents.pause(agent.id)
    print(
        f"Paused agent {agent.name} ({agent.id[:SHORT_ID_SHOWN]}, was {previous}): it takes no "
        "new work until `tt agent resume`"
    )
    return 0


@guard_redis
def cmd_resume(args: argparse.Namespace) -> int:
    town = open_town(args)
    agent = resolve_agent(town, args.agent)
    town.agents.resume(agent.id)
    now = town.agents.get(agent.id).state
    print(f"Resumed agent {agent.name} ({agent.id[:SHORT_ID_SHOWN]}): {now}")
    return 0


def prunable(town: Town, agent: Agent, now_ms: int) -> bool:
    return agent.state in PRUNABLE_AGENT_STATES and not recovery.in_use(agent, now_ms)


@guard_redis
def cmd_prune(args: argparse.Namespace) -> int:
    town = open_town(args)
    recovered = recovery.recover(town) if args.all else None
    now_ms = town.agents.now_ms()
    removed = []
    for agent in town.agents.all():
        if prunable(town, agent, now_ms):
            town.agents.delete(agent.id)
            removed.append(agent.name)
    if args.json:
        out = {"removed": len(removed), "agents": removed}
        if recovered is not None:
            out["recovered"] = recovered
        print_json(out)
        return 0
    if recovered is not None:
        print(
            f"Recovered {recovered['recovered']} dead agent(s); "
            f"returned {recovered['reclaimed']} task(s) to work"
        )
    print(f"Pruned {len(removed)} agent(s)" + (f": {', '.join(removed)}" if removed else ""))
    return 0
