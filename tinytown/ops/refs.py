"""What the operations share: agent references, the CLI rule, and the JSON shapes of records."""

from __future__ import annotations

from collections.abc import Callable

from tinytown.core import inputs
from tinytown.core.clis import UnknownCli, named_cli
from tinytown.core.records import SUPERVISOR_ID, Agent
from tinytown.core.states import rest_state
from tinytown.ops.args import field, uuid_param
from tinytown.store import Town

SUPERVISOR_ALIASES = ("supervisor", "conductor", SUPERVISOR_ID)


def agent_id_for(t: Town, ref: str, *, allow_supervisor: bool = False) -> tuple[str, Agent | None]:
    """An agent reference (UUID, name, nickname, short id) → its id and record; 404 if unknown."""
    if allow_supervisor and ref.strip().lower() in SUPERVISOR_ALIASES:
        return SUPERVISOR_ID, None
    agent = t.agents.resolve(ref)
    return agent.id, agent


def agent_ref(args: dict, name: str, *, required: bool = False) -> str | None:
    """An agent reference among the arguments: an id, name, nickname or short id."""
    return field(args, name, str, required=required, rule=inputs.reference)


def cli_rule(t: Town) -> Callable[[str, str], str]:
    """The rule for a ``cli`` argument: a coding-CLI name this town configures (a preset or
    ``[agent_clis.NAME]``), never a command."""

    def rule(value: str, name: str) -> str:
        text = inputs.text(value, name, max_chars=200, multiline=False)
        try:
            return named_cli(text, t.config.agent_clis).name
        except UnknownCli as err:  # named by its field: a mission's items[2].cli, say
            raise inputs.InputError(name, f"field {name!r}: {err}") from None

    return rule


def as_is(value: str, _name: str) -> str:
    """The rule for a value checked by what it names (an id, an agent to look up)."""
    return value


def task_id(args: dict) -> str:
    """A ``task_id`` argument: a UUID (400 otherwise, as upstream's path check)."""
    return uuid_param(field(args, "task_id", str, required=True, rule=as_is), "task id")


def mission_id(args: dict) -> str:
    return uuid_param(field(args, "mission_id", str, required=True, rule=as_is), "mission id")


def agent_named(t: Town, args: dict, name: str = "agent") -> tuple[str, Agent | None]:
    """The agent an argument names (any reference; 404 if there is none)."""
    return agent_id_for(t, field(args, name, str, required=True, rule=as_is))


def agent_json(agent: Agent, current_scope: str | None, now_ms: int) -> dict:
    """Upstream's agent shape plus liveness: ``alive`` (an active state and a heartbeat within
    the agent's own window, by the Redis clock), its ``heartbeat_interval_secs`` and the
    ``heartbeat_age_secs``. A dead agent keeps the state it had; ``alive`` says it is dead."""
    return {
        "id": agent.id,
        "name": agent.name,
        "nickname": agent.nickname,
        "role_id": agent.role_id,
        "parent_agent_id": agent.parent_agent_id,
        "spawn_mode": agent.spawn_mode,
        "cli": agent.cli,
        "state": rest_state(agent.state),
        "current_scope": current_scope,
        "alive": agent.alive(now_ms),
        "heartbeat_interval_secs": agent.heartbeat_interval_secs or None,
        "heartbeat_age_secs": agent.heartbeat_age_secs(now_ms),
        "outpost": agent.outpost,
        "cost_per_hour": agent.cost_per_hour,
    }


def current_scopes(t: Town, agents: list[Agent]) -> dict[str, str]:
    """Description of each agent's ``current_task`` (one pipelined read)."""
    return t.tasks.descriptions([a.current_task for a in agents if a.current_task])
