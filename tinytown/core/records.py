"""Agent and task records and their encodings in Redis hashes (upstream spec §4.2–4.3).

States and their moves are in :mod:`tinytown.core.states`. Hash timestamps are RFC 3339 with
``+00:00``; readers also accept ``Z``. Pure: no I/O.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field, fields

from tinytown.core.clock import parse_rfc3339
from tinytown.core.states import (
    ACTIVE_AGENT_STATES,
    AGENT_DEFAULT_STATE,
    AGENT_STATES,
    TASK_DEFAULT_STATE,
    TASK_STATE_ALIASES,
    TASK_STATES,
    TERMINAL_TASK_STATES,
    rest_state,
)

SUPERVISOR_ID = "00000000-0000-0000-0000-000000000001"
RESERVED_AGENT_NAMES = ("supervisor", "conductor")


def new_id() -> str:
    return str(uuid.uuid4())


def is_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text.lower()
    except (ValueError, AttributeError, TypeError):
        return False


# Task fields stored only when not None. The rest are always stored, except ``push``
# (only when true).
TASK_OPTIONAL_FIELDS = (
    "assigned_to",
    "started_at",
    "completed_at",
    "result",
    "parent_id",
    "repo",
    "base_branch",
    "cli",
    "branch",
    "commit",
    "mission_id",
    "work_item_id",
    "max_attempts",
    "worker_secs",
    "cost",
)


_CREATION_FIELDS = frozenset(TASK_OPTIONAL_FIELDS)  # what Task.new_hash may be given


def _amount(text: str | None) -> float | None:
    """A non-negative number as stored (seconds, money); None when absent or unreadable."""
    if not text:  # (the usual case, checked first: a raised ValueError costs more)
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value >= 0 and value == value and value != float("inf") else None


def _positive_int(text: str | None) -> int | None:
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return value if value > 0 else None


@dataclass
class Task:
    id: str
    description: str
    state: str = TASK_DEFAULT_STATE
    created_at: str = ""
    updated_at: str = ""
    tags: list[str] = field(default_factory=list)
    assigned_to: str | None = None
    started_at: str | None = None
    completed_at: str | None = None
    result: str | None = None
    parent_id: str | None = None
    # Tinytown for Python: delivery and workspace fields.
    attempts: int = 0
    repo: str | None = None
    base_branch: str | None = None
    push: bool = False
    cli: str | None = None
    branch: str | None = None
    commit: str | None = None
    # A mission's task: its mission and work item, and the item's attempts (else the worker's).
    mission_id: str | None = None
    work_item_id: str | None = None
    max_attempts: int | None = None
    # What running it took: seconds its coding CLI ran, all attempts, and their cost at the
    # rate of the outposts that ran it (None: it has not run).
    worker_secs: float | None = None
    cost: float | None = None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_TASK_STATES

    def attempts_allowed(self, default: int) -> int:
        """The task's own ``max_attempts`` (a mission item's policy), else ``default``."""
        return self.max_attempts or default

    def to_hash(self) -> dict[str, str]:
        """Field → string, omitting empty optionals (they are HDEL'd, never stored empty)."""
        out = {
            "id": self.id,
            "description": self.description,
            "state": self.state,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "tags": json.dumps(self.tags) if self.tags else "[]",
            "attempts": str(self.attempts),
        }
        for name in TASK_OPTIONAL_FIELDS:
            value = getattr(self, name)
            if value is not None:
                out[name] = str(value)
        if self.push:
            out["push"] = "true"
        return out

    @staticmethod
    def new_hash(
        task_id: str, description: str, state: str, created_at: str, tags: list[str], **optional
    ) -> dict[str, str]:
        """The hash a new task is stored as: what ``to_hash`` gives for it, made without the
        :class:`Task` (a submit builds this before it sends, the Task after). ``optional``: the
        ``TASK_OPTIONAL_FIELDS`` known at creation (None: left out) and ``push``."""
        out = {
            "id": task_id,
            "description": description,
            "state": state,
            "created_at": created_at,
            "updated_at": created_at,
            "tags": json.dumps(tags) if tags else "[]",
            "attempts": "0",
        }
        push = optional.pop("push", False)
        for name, value in optional.items():  # (a plain loop: this is on a submit's way)
            if name not in _CREATION_FIELDS:
                raise TypeError(f"not a task field: {name!r}")
            if value is not None:
                out[name] = str(value)
        if push:
            out["push"] = "true"
        return out

    @classmethod
    def from_hash(cls, data: dict[str, str]) -> Task:
        state = data.get("state", TASK_DEFAULT_STATE)
        state = TASK_STATE_ALIASES.get(state, state)
        if state not in TASK_STATES:
            state = TASK_DEFAULT_STATE
        raw_tags = data.get("tags") or "[]"
        try:
            tags = json.loads(raw_tags) if raw_tags != "[]" else []
        except ValueError:
            tags = []
        try:
            attempts = int(data.get("attempts") or 0)
        except ValueError:
            attempts = 0
        return cls(
            id=data.get("id", ""),
            description=data.get("description", ""),
            state=state,
            created_at=data.get("created_at", ""),
            updated_at=data.get("updated_at", ""),
            tags=tags if isinstance(tags, list) else [],
            assigned_to=data.get("assigned_to") or None,
            started_at=data.get("started_at") or None,
            completed_at=data.get("completed_at") or None,
            result=data.get("result"),
            parent_id=data.get("parent_id") or None,
            attempts=attempts,
            repo=data.get("repo") or None,
            base_branch=data.get("base_branch") or None,
            push=data.get("push") == "true",
            cli=data.get("cli") or None,
            branch=data.get("branch") or None,
            commit=data.get("commit") or None,
            mission_id=data.get("mission_id") or None,
            work_item_id=data.get("work_item_id") or None,
            max_attempts=_positive_int(data.get("max_attempts")),
            worker_secs=_amount(data.get("worker_secs")),
            cost=_amount(data.get("cost")),
        )

    def to_json(self) -> dict:
        """The REST shape: capitalised state, tags as a list, everything else as stored."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["state"] = rest_state(self.state)
        return out


@dataclass
class Agent:
    id: str
    name: str
    agent_type: str = "worker"
    state: str = AGENT_DEFAULT_STATE
    cli: str = ""
    created_at: str = ""
    last_heartbeat: str = ""
    last_active_at: str = ""
    tasks_completed: int = 0
    rounds_completed: int = 0
    spawn_mode: str = "fresh"
    current_task: str | None = None
    nickname: str | None = None
    role_id: str | None = None
    parent_agent_id: str | None = None
    # Liveness (Tinytown for Python): the agent's own heartbeat interval, and until when (ms
    # since the epoch, Redis clock) its last heartbeat keeps it alive — DEAD_AFTER_HEARTBEATS
    # intervals after the beat. 0: never beat (a record registered through REST, or from an
    # older version), so never alive.
    heartbeat_interval_secs: int = 0
    alive_until: int = 0
    # Where its worker runs and what that costs an hour (the scaler's outpost; set from the
    # worker's TINYTOWN_OUTPOST and TINYTOWN_COST_PER_HOUR).
    outpost: str | None = None
    cost_per_hour: float | None = None

    @property
    def active(self) -> bool:
        """In a state where a process is presumed to run (upstream's is_active)."""
        return self.state in ACTIVE_AGENT_STATES

    def alive(self, now_ms: int) -> bool:
        """Active, and its last heartbeat is recent enough by its own interval."""
        return self.active and self.alive_until > now_ms

    def heartbeat_age_secs(self, now_ms: int) -> float | None:
        beat = parse_rfc3339(self.last_heartbeat)
        return None if beat is None else round(max(0.0, now_ms / 1000 - beat.timestamp()), 3)

    def to_hash(self) -> dict[str, str]:
        return {
            f.name: str(getattr(self, f.name))
            for f in fields(self)
            if getattr(self, f.name) is not None
        }

    @classmethod
    def from_hash(cls, data: dict[str, str]) -> Agent:
        state = data.get("state", AGENT_DEFAULT_STATE)
        created = data.get("created_at", "")

        def count(name: str) -> int:
            try:
                return int(data.get(name) or 0)
            except ValueError:
                return 0

        return cls(
            id=data.get("id", ""),
            name=data.get("name", ""),
            agent_type=data.get("agent_type", "worker"),
            state=state if state in AGENT_STATES else AGENT_DEFAULT_STATE,
            cli=data.get("cli", ""),
            created_at=created,
            last_heartbeat=data.get("last_heartbeat", ""),
            last_active_at=data.get("last_active_at") or created,
            tasks_completed=count("tasks_completed"),
            rounds_completed=count("rounds_completed"),
            spawn_mode=data.get("spawn_mode", "fresh"),
            current_task=data.get("current_task") or None,
            nickname=data.get("nickname") or None,
            role_id=data.get("role_id") or None,
            parent_agent_id=data.get("parent_agent_id") or None,
            heartbeat_interval_secs=count("heartbeat_interval_secs"),
            alive_until=count("alive_until"),
            outpost=data.get("outpost") or None,
            cost_per_hour=_amount(data.get("cost_per_hour")),
        )

    def short_id(self) -> str:
        return self.id[:4]
