"""What the route modules share: the town, agent references and JSON shapes of records."""

from __future__ import annotations

from flask import current_app

from tinytown.api.validation import field, uuid_param
from tinytown.core import inputs
from tinytown.core.clis import named_cli
from tinytown.core.records import SUPERVISOR_ID, Agent, Task
from tinytown.core.states import rest_state
from tinytown.store import Town
from tinytown.store.missions import MissionStore

SUPERVISOR_ALIASES = ("supervisor", "conductor")


def town() -> Town:
    return current_app.config["TOWN"]


def missions() -> MissionStore:
    return current_app.config["MISSIONS"]


def agent_id_for(ref: str, *, allow_supervisor: bool = False) -> tuple[str, Agent | None]:
    """An agent reference (UUID, name, nickname, short id) → its id and record; 404 if unknown."""
    if allow_supervisor and (
        ref.strip().lower() in SUPERVISOR_ALIASES or ref.strip().lower() == SUPERVISOR_ID
    ):
        return SUPERVISOR_ID, None
    agent = town().agents.resolve(ref)
    return agent.id, agent


def agent_ref(body: dict, name: str, *, required: bool = False) -> str | None:
    """An agent reference in a body: an id, name, nickname or short id (the name rule)."""
    return field(body, name, str, required=required, rule=inputs.reference)


def cli_rule(value: str, name: str) -> str:
    """A coding-CLI name this town configures (a preset or ``[agent_clis.NAME]``); never a
    command."""
    return named_cli(
        inputs.text(value, name, max_chars=200, multiline=False), town().config.agent_clis
    ).name


def valid_mission_id(value: str) -> str:
    return uuid_param(value, "mission id")


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


def task_json(task: Task) -> dict:
    return task.to_json()


def current_scopes(agents: list[Agent]) -> dict[str, str]:
    """Description of each agent's ``current_task`` (one pipelined read)."""
    return town().tasks.descriptions([a.current_task for a in agents if a.current_task])
