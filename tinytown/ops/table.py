"""The table of operations: each thing a caller can ask of the town, written once.

An :class:`Operation` names what it does (upstream's MCP tool name, e.g. ``task.assign``), the
scope it needs, its arguments as JSON Schema, and the function that does it. REST views, MCP
tools and resources, A2A methods and ``tt mcp-stdio`` all call :func:`run`, so they share the
checks, the messages and the work; only the way arguments arrive differs.

``run`` turns every error a caller can cause into a :class:`~tinytown.core.errors.Problem` (the
status and sentence REST answers with); anything else is a bug and propagates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis

from tinytown.connection.target import resolve_target
from tinytown.core import defaults
from tinytown.core.clis import UnknownCli
from tinytown.core.errors import Full, InvalidTransition, NotFound, Problem, TinytownError
from tinytown.core.inputs import InputError
from tinytown.core.urls import redact_text
from tinytown.store import Town

READ, WRITE, MANAGE = "town.read", "town.write", "agent.manage"


class Caller(Protocol):
    """Who asks (an authenticated principal, or the local user of ``tt mcp-stdio``)."""

    id: str

    def allows(self, scope: str) -> bool: ...


@dataclass(frozen=True)
class Operation:
    name: str
    scope: str
    summary: str
    fn: Callable[[Town, dict], dict]
    params: dict[str, dict] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    rest: str = ""  # the REST route that calls it, e.g. "POST /v1/tasks/assign"
    status: int = 200  # REST status on success
    aliases: tuple[str, ...] = ()
    destructive: bool = False

    @property
    def read_only(self) -> bool:
        return self.scope == READ

    def input_schema(self) -> dict:
        schema: dict[str, Any] = {
            "type": "object",
            "properties": self.params,
            "additionalProperties": True,
        }
        if self.required:
            schema["required"] = list(self.required)
        return schema


OPERATIONS: dict[str, Operation] = {}  # by name and by alias
TOOLS: list[Operation] = []  # each operation once, in the order written


def operation(
    name: str,
    scope: str,
    summary: str,
    *,
    params: dict[str, dict] | None = None,
    required: tuple[str, ...] = (),
    rest: str = "",
    status: int = 200,
    aliases: tuple[str, ...] = (),
    destructive: bool = False,
) -> Callable[[Callable[[Town, dict], dict]], Callable[[Town, dict], dict]]:
    """Register the decorated ``fn(town, args) -> dict`` as the operation ``name``."""

    def register(fn: Callable[[Town, dict], dict]) -> Callable[[Town, dict], dict]:
        op = Operation(
            name, scope, summary, fn, params or {}, required, rest, status, aliases, destructive
        )
        for key in (name, *aliases):
            if key in OPERATIONS:
                raise ValueError(f"operation {key!r} is defined twice")
            OPERATIONS[key] = op
        TOOLS.append(op)
        return fn

    return register


def scope_denied(op: Operation) -> Problem:
    return Problem(403, f"{op.name} needs the {op.scope!r} scope", error="insufficient scope")


def find(name: str) -> Operation:
    try:
        return OPERATIONS[name]
    except KeyError:
        raise Problem(404, f"no operation named {name!r}", field="name") from None


def run(name: str, town: Town, args: dict, caller: Caller | None = None) -> dict:
    """Do operation ``name`` with ``args`` for ``caller`` (``None``: already checked, as REST
    views are by their blueprint). Raises :class:`Problem` for anything the caller can fix."""
    op = find(name)
    if caller is not None and not caller.allows(op.scope):
        raise scope_denied(op)
    try:
        return op.fn(town, args)
    except Exception as err:
        problem = as_problem(err, town)
        if problem is None:
            raise
        raise problem from err


def as_problem(err: BaseException, town: Town) -> Problem | None:
    """The status and sentence for an error a caller caused (or Redis did); ``None`` for a bug."""
    if isinstance(err, Problem):
        return err
    if isinstance(err, InputError):
        return Problem(err.status, str(err), field=err.field)
    if isinstance(err, UnknownCli):
        return Problem(422, f"field 'cli': {err}", field="cli")
    if isinstance(err, NotFound):
        return Problem(404, str(err))
    if isinstance(err, (InvalidTransition, Full)):
        return Problem(409, str(err))
    if isinstance(err, TinytownError):
        return Problem(400, str(err))
    if isinstance(err, (redis.ConnectionError, redis.TimeoutError)):
        return Problem(
            503,
            redis_detail(err, town),
            headers={"Retry-After": str(defaults.TOWNHALL_RETRY_AFTER_SECS)},
        )
    return None


def redis_detail(err: BaseException, town: Town) -> str:
    """What went wrong with Redis, naming it with its password redacted."""
    target = resolve_target(town.config)
    detail = redact_text(str(err), target.url)
    return f"Redis at {target.display} is unreachable: {detail}; retry shortly"


# -- argument schemas (JSON Schema), for tools/list and the docs -------------------------------


def string(description: str, **more) -> dict:
    return {"type": "string", "description": description, **more}


def integer(description: str, low: int | None = None, high: int | None = None) -> dict:
    schema: dict[str, Any] = {"type": "integer", "description": description}
    if low is not None:
        schema["minimum"] = low
    if high is not None:
        schema["maximum"] = high
    return schema


def boolean(description: str, default: bool = False) -> dict:
    return {"type": "boolean", "description": description, "default": default}


def strings(description: str) -> dict:
    return {"type": "array", "items": {"type": "string"}, "description": description}


def objects(description: str) -> dict:
    return {"type": "array", "items": {"type": "object"}, "description": description}


def document(description: str) -> dict:
    return {"type": "object", "description": description}


AGENT = string("the agent: its id, name, nickname or an id prefix of 8+ hex digits")
TASK_ID = string("the task's id (a UUID)")
MISSION_ID = string("the mission's id (a UUID)")
PAGE = {
    "offset": integer("how many to skip", 0),
    "limit": integer(
        f"how many to return (default {defaults.TOWNHALL_PAGE_LIMIT})",
        1,
        defaults.TOWNHALL_PAGE_LIMIT_MAX,
    ),
}
