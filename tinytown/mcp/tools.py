"""MCP tools: the operations table as ``tools/list`` shows it, and ``tools/call``.

A tool's result is its operation's JSON as ``structuredContent`` and as text; a failure is a
tool error (``isError``) whose text is the sentence REST puts in its problem document's
``detail``, with the problem document itself as ``structuredContent``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from http import HTTPStatus

from tinytown import ops
from tinytown.core.errors import Problem
from tinytown.core.rpc import INVALID_PARAMS, RpcError
from tinytown.ops.table import READ, Caller, Operation
from tinytown.store import Town

SCOPE_ORDER = {"town.read": 0, "town.write": 1, "agent.manage": 2}


def tool_json(op: Operation) -> dict:
    """How ``tools/list`` shows an operation (names are upstream's; aliases are not listed)."""
    title = op.summary.split(":")[0].split(".")[0]
    return {
        "name": op.name,
        "title": title,
        "description": f"{op.summary} Needs the {op.scope!r} scope."
        + (f" REST: {op.rest}." if op.rest else ""),
        "inputSchema": op.input_schema(),
        "annotations": {
            "title": title,
            "readOnlyHint": op.scope == READ,
            "destructiveHint": op.destructive,
            "idempotentHint": op.scope == READ,
            "openWorldHint": False,
        },
    }


@cache
def tool_list() -> tuple[dict, ...]:
    """Every tool, reads first (the table does not change while a process runs)."""
    ordered = sorted(ops.TOOLS, key=lambda op: (SCOPE_ORDER.get(op.scope, 9), op.name))
    return tuple(tool_json(op) for op in ordered)


@dataclass(frozen=True)
class Outcome:
    """What a call did: the MCP result, and the status REST would have answered (for audit)."""

    result: dict
    status: int
    op: Operation


def call_tool(town: Town, caller: Caller, name: object, arguments: object) -> Outcome:
    """Run tool ``name``; an unknown name or arguments that are not an object are protocol
    errors (:class:`RpcError`), anything the operation refuses is a tool error."""
    if not isinstance(name, str) or name not in ops.OPERATIONS:
        raise RpcError(INVALID_PARAMS, f"unknown tool {str(name)[:80]!r}; see tools/list")
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        raise RpcError(INVALID_PARAMS, "'arguments' must be an object")
    op = ops.OPERATIONS[name]
    try:
        data = ops.run(name, town, arguments, caller)
    except Problem as err:
        return Outcome(tool_error(err), err.status, op)
    return Outcome(tool_result(data), op.status, op)


class Refused(RpcError):
    """The JSON-RPC error for a resource or prompt whose operation refused the caller (401 or
    403), with that status, so that the transport audits it as the denial it is."""

    def __init__(self, code: int, problem: Problem, data: dict | None = None):
        super().__init__(code, problem.detail, data)
        self.status = problem.status


def protocol_error(problem: Problem, code: int, data: dict | None = None) -> RpcError:
    """A resource's or prompt's problem as its JSON-RPC error (:class:`Refused` for a denial)."""
    if problem.status in (401, 403):
        return Refused(code, problem, data)
    return RpcError(code, problem.detail, data)


def tool_result(data: dict) -> dict:
    return {
        "content": [{"type": "text", "text": json.dumps(data, ensure_ascii=False)}],
        "structuredContent": data,
        "isError": False,
    }


def tool_error(err: Problem) -> dict:
    return {
        "content": [{"type": "text", "text": err.detail}],
        "structuredContent": problem_json(err),
        "isError": True,
    }


def problem_json(err: Problem) -> dict:
    doc = {"status": err.status, "title": HTTPStatus(err.status).phrase, "detail": err.detail}
    if err.field is not None:
        doc["field"] = err.field
    return doc
