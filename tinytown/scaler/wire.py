"""The contract with townhall, as the scaler reads it: the scaling signal (``GET /api/scaling``)
and the agent list (``GET /v1/agents``), each validated strictly into a plain record.

The words on the wire come from the core, not from a copy: agent states in their REST form
(:data:`tinytown.core.states.AGENT_REST_STATES`, ``"Idle"``) and the recommendations
(:data:`tinytown.core.scaling.RECOMMENDATIONS`). Anything else is Malformed, and a pass that
cannot read the signal does nothing at all.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tinytown.core import states
from tinytown.core.scaling import RECOMMENDATIONS, SCALE_DOWN_RECOMMENDATIONS
from tinytown.core.states import AGENT_REST_STATES, rest_state
from tinytown.scaler.epoch import epoch_secs
from tinytown.scaler.errors import Malformed

AGENT_STATES = AGENT_REST_STATES  # every state /v1/agents may report
# Counted among active_agents: a process is presumed to run.
ACTIVE_AGENT_STATES = frozenset(map(rest_state, states.ACTIVE_AGENT_STATES))
IDLE, ERROR = rest_state(states.AGENT_IDLE_STATE), rest_state(states.AGENT_ERROR_STATE)
WORKING = rest_state(states.AGENT_WORKING_STATE)  # what the signal's busy_agents counts
STOPPED = rest_state(states.AGENT["stop"].target)  # its worker left (or is on its way out)
BUSY_AGENT_STATES = frozenset(map(rest_state, states.AGENT_BUSY_STATES))  # never drained
DOWN_RECOMMENDATIONS = frozenset(SCALE_DOWN_RECOMMENDATIONS)  # a surplus may be drained


@dataclass(frozen=True)
class Signal:
    town: str
    timestamp: str
    queue_depth: int
    pending_tasks: int
    in_flight_tasks: int
    active_agents: int
    cold_agents: int
    desired_agents: int
    max_agents: int
    scaling_recommendation: str
    idle_agents: int | None = None
    busy_agents: int | None = None
    version: str | None = None  # townhall supports ?wait=&since= when it sends one


SIGNAL_COUNTS = (
    "queue_depth",
    "pending_tasks",
    "in_flight_tasks",
    "active_agents",
    "cold_agents",
    "desired_agents",
    "max_agents",
)


# A town's name as townhall and the scaler's config accept it (it names containers, volumes and
# the state file); the most an agent count may be; the longest id, task or name of an agent.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
COUNT_MAX = 10**9
TEXT_MAX_CHARS = 256


def _count(body: Mapping[str, Any], key: str, required: bool = True) -> int | None:
    if key not in body and not required:
        return None
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= COUNT_MAX:
        shown = repr(value) if not isinstance(value, int) or value < 10**12 else "a huge number"
        raise Malformed(f"{key}={shown[:80]}: expected a whole number from 0 to {COUNT_MAX}")
    return value


def _text(value: Any, where: str, required: bool) -> str | None:
    """A string of at most ``TEXT_MAX_CHARS`` printable characters (None: absent, if allowed)."""
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or len(value) > TEXT_MAX_CHARS:
        raise Malformed(
            f"{where}={str(value)[:80]!r}: expected a string of 1-{TEXT_MAX_CHARS} characters"
        )
    if not value.isprintable():
        raise Malformed(f"{where}={value[:80]!r}: expected printable characters only")
    return value


def parse_signal(body: Any) -> Signal:
    """Validate a ``GET /api/scaling`` body strictly; raise Malformed on anything unexpected.

    ``idle_agents`` and ``busy_agents`` are this project's additions: checked when present, not
    required, so an upstream townhall still drives the scaler.
    """
    if not isinstance(body, dict):
        raise Malformed(f"expected a JSON object, got {type(body).__name__}")
    town = body.get("town")
    if not isinstance(town, str) or not NAME_RE.match(town):
        raise Malformed(
            f"town={str(town)[:80]!r}: expected a town name (1-63 letters, digits, . _ -)"
        )
    stamp = body.get("timestamp")
    if not isinstance(stamp, str) or epoch_secs(stamp) is None:
        raise Malformed(f"timestamp={stamp!r}: expected an RFC 3339 time")
    counts = {key: _count(body, key) for key in SIGNAL_COUNTS}
    recommendation = body.get("scaling_recommendation")
    if recommendation not in RECOMMENDATIONS:
        raise Malformed(
            f"scaling_recommendation={recommendation!r}: expected one of "
            f"{', '.join(RECOMMENDATIONS)}"
        )
    return Signal(
        town,
        stamp,
        **counts,
        scaling_recommendation=recommendation,
        idle_agents=_count(body, "idle_agents", required=False),
        busy_agents=_count(body, "busy_agents", required=False),
        version=_version(body.get("version")),
    )


def _version(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.isalnum() or len(value) > 64:
        raise Malformed(f"version={str(value)[:80]!r}: expected up to 64 letters and digits")
    return value


@dataclass(frozen=True)
class Agent:
    id: str
    state: str
    current_task: str | None
    last_heartbeat: float | None  # epoch seconds
    name: str | None = None
    alive: bool | None = None  # townhall's word: a heartbeat within the agent's own window
    heartbeat_interval_secs: int | None = None  # the agent's own
    heartbeat_age_secs: float | None = None  # as townhall measured it

    @property
    def busy(self) -> bool:
        return self.state in BUSY_AGENT_STATES or self.current_task is not None

    @property
    def live(self) -> bool:
        """Counted among ``active_agents``: an active state, and alive when townhall says."""
        return self.state in ACTIVE_AGENT_STATES and self.alive is not False


def _optional_number(
    item: Mapping[str, Any], key: str, index: int, kind: type | tuple[type, ...]
) -> Any:
    value = item.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, kind) or not math.isfinite(value):
        raise Malformed(
            f"agents[{index}].{key}={value!r}: expected "
            f"{'a whole number' if kind is int else 'a number'} or null"
        )
    return value


def parse_agents(body: Any) -> dict[str, Agent]:
    """Validate a ``GET /v1/agents`` body; raise Malformed if any agent is not as the contract says.

    ``current_task`` and ``last_heartbeat`` must be present (they may be null): without them
    nobody can tell a busy or dead worker from an idle one. ``alive``, ``heartbeat_interval_secs``
    and ``heartbeat_age_secs`` are this project's additions: checked when present, not required.
    """
    if not isinstance(body, dict) or not isinstance(body.get("agents"), list):
        raise Malformed("expected an object with an 'agents' list")
    agents: dict[str, Agent] = {}
    for index, item in enumerate(body["agents"]):
        if not isinstance(item, dict):
            raise Malformed(f"agents[{index}]: expected an object")
        agent_id, state = _text(item.get("id"), f"agents[{index}].id", True), item.get("state")
        if state not in AGENT_STATES:
            raise Malformed(
                f"agents[{index}].state={state!r}: expected one of "
                f"{', '.join(sorted(AGENT_STATES))}"
            )
        for key in ("current_task", "last_heartbeat"):
            if key not in item or not (item[key] is None or isinstance(item[key], str)):
                raise Malformed(
                    f"agents[{index}].{key}={str(item.get(key))[:80]!r}: expected a string or null"
                )
        task = _text(item["current_task"] or None, f"agents[{index}].current_task", False)
        heartbeat = None
        if item["last_heartbeat"] is not None:
            heartbeat = epoch_secs(item["last_heartbeat"])
            if heartbeat is None:
                raise Malformed(
                    f"agents[{index}].last_heartbeat={item['last_heartbeat']!r}: "
                    "expected an RFC 3339 time"
                )
        name = item.get("name") if isinstance(item.get("name"), str) else None
        name = _text(name or None, f"agents[{index}].name", False)
        alive = item.get("alive")
        if alive is not None and not isinstance(alive, bool):
            raise Malformed(f"agents[{index}].alive={alive!r}: expected true, false or null")
        interval = _optional_number(item, "heartbeat_interval_secs", index, int)
        if interval is not None and interval < 1:
            raise Malformed(
                f"agents[{index}].heartbeat_interval_secs={interval!r}: expected a "
                "whole number >= 1"
            )
        age = _optional_number(item, "heartbeat_age_secs", index, (int, float))
        agents[agent_id] = Agent(
            agent_id,
            state,
            task,
            heartbeat,
            name,
            alive,
            interval,
            None if age is None else float(age),
        )
    return agents
