"""``tt mcp-stdio``: the town's MCP server on stdin and stdout, for an assistant on this machine.

Built on the official SDK's low-level ``Server``, which owns the framing and the handshake. Each
method it hands over is answered by :class:`tinytown.mcp.protocol.Session`, the code ``/mcp``
answers with, and only the answer is turned into the SDK's types here: a tool does here exactly
what its REST route and ``/mcp`` do.

The caller is the local user (principal ``local``): whoever can run ``tt`` in the town already
has every scope. ``read_only`` narrows that to ``town.read``, a safety switch for an assistant
that should look but not touch. Each tool call that writes, and each refusal, leaves one audit
line (townhall's JSON record) on stderr; stdout carries protocol messages only.
"""

from __future__ import annotations

import logging
import sys
import uuid
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread
import mcp_types as types
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import MCPError
from pydantic import BaseModel

from tinytown.core.logfmt import audit_line, audit_result, emit
from tinytown.core.rpc import RpcError
from tinytown.mcp import tools
from tinytown.mcp.protocol import INSTRUCTIONS, SERVER_INFO, Session
from tinytown.ops.table import READ
from tinytown.store import Town

TRANSPORT = "stdio"

# The SDK's result type for each method the session answers (``initialize`` is the SDK's).
RESULTS: dict[str, type[BaseModel]] = {
    "tools/list": types.ListToolsResult,
    "tools/call": types.CallToolResult,
    "resources/list": types.ListResourcesResult,
    "resources/templates/list": types.ListResourceTemplatesResult,
    "resources/read": types.ReadResourceResult,
    "prompts/list": types.ListPromptsResult,
    "prompts/get": types.GetPromptResult,
}


@dataclass(frozen=True)
class LocalUser:
    """The person at this machine, as a caller of :func:`tinytown.ops.run`."""

    read_only: bool = False
    id: str = "local"

    def allows(self, scope: str) -> bool:
        return scope == READ or not self.read_only


def build_server(town: Town, caller: LocalUser) -> Server:
    """An SDK server whose every method is answered by :class:`Session` for ``caller``."""

    async def answer(ctx: Any, _params: Any) -> BaseModel:
        # The SDK has checked the params' shape; the session reads the raw ones, as /mcp does.
        params = dict(ctx.params or {})
        result = await anyio.to_thread.run_sync(respond, town, caller, ctx.method, params)
        return RESULTS[ctx.method].model_validate(result)

    return Server(
        SERVER_INFO["name"],
        version=SERVER_INFO["version"],
        title=SERVER_INFO["title"],
        instructions=INSTRUCTIONS,
        on_list_tools=answer,
        on_call_tool=answer,
        on_list_resources=answer,
        on_list_resource_templates=answer,
        on_read_resource=answer,
        on_list_prompts=answer,
        on_get_prompt=answer,
    )


def respond(town: Town, caller: LocalUser, method: str, params: dict) -> dict:
    """The session's answer to ``method``; a protocol error as the SDK's :class:`MCPError`."""
    session = Session(town, caller)
    try:
        result = session.handle(method, params)
    except RpcError as err:
        raise MCPError(err.code, err.message, err.data) from None
    finally:
        if session.outcome is not None:
            audit(caller, session.outcome)
    if method == "tools/list" and caller.read_only:  # list only what this caller may call
        result = {"tools": [t for t in result["tools"] if t["annotations"]["readOnlyHint"]]}
    return result


def audit(caller: LocalUser, outcome: tools.Outcome) -> None:
    """One audit line for a tool call that writes, or one refused: townhall's rule."""
    if outcome.op.read_only and outcome.status not in (401, 403):
        return
    emit(
        audit_line(
            request_id=str(uuid.uuid4()),
            principal=caller.id,
            transport=TRANSPORT,
            status=outcome.status,
            result=audit_result(outcome.status),
            tool=outcome.op.name,
        ),
        sys.stderr,
    )


def serve(town: Town, *, read_only: bool = False) -> None:
    """Answer MCP on stdin and stdout until the client closes stdin."""
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    server = build_server(town, LocalUser(read_only=read_only))

    async def main() -> None:
        async with stdio_server() as (read_stream, write_stream):
            await server.run(read_stream, write_stream, server.create_initialization_options())

    anyio.run(main)
