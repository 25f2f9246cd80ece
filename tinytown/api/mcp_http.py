"""``/mcp``: MCP's Streamable HTTP transport, answering each POST with JSON (no SSE stream).

Auth is REST's: the same keys or tokens, the same 401 sentence (as a JSON-RPC error, with
``WWW-Authenticate``), and each tool needs its operation's scope. Every tool call that writes,
and every denial, leaves one audit line naming the principal and the tool. A browser page on
another origin is refused before this (the spec's DNS-rebinding rule; :mod:`.browsers`). There
are no sessions: GET (a server-to-client stream) and DELETE (ending a session) answer 405.
"""

from __future__ import annotations

from flask import Blueprint, Response, g, request

from tinytown.api import jsonrpc
from tinytown.api.access import audit, identify
from tinytown.api.auth import AuthError
from tinytown.api.common import town
from tinytown.core.rpc import INVALID_REQUEST, RpcError
from tinytown.mcp.protocol import VERSIONS, Session
from tinytown.mcp.tools import Refused

mcp = Blueprint("mcp", __name__)
PATH = "/mcp"
ANY = "MCP"  # required_scope: each tool names its own (see tinytown.ops)
mcp.required_scope = ANY


@mcp.post(PATH)
def call() -> Response:
    g.audited = True  # this view writes its own audit lines
    try:
        principal = identify()
    except AuthError as err:
        who = err.principal.id if err.principal else "anonymous"
        audit(who, "POST", PATH, err.status)
        headers = {"WWW-Authenticate": 'Bearer realm="townhall"'} if err.status == 401 else {}
        return jsonrpc.error(
            None, RpcError(INVALID_REQUEST, err.detail), status=err.status, headers=headers
        )
    version = request.headers.get("MCP-Protocol-Version")
    if version is not None and version not in VERSIONS:
        return jsonrpc.error(
            None,
            RpcError(
                INVALID_REQUEST,
                f"unsupported MCP-Protocol-Version {version[:40]!r}; "
                f"this server speaks {', '.join(VERSIONS)}",
            ),
            status=400,
        )
    try:
        rpc = jsonrpc.read_call()
    except jsonrpc.BadCall as err:
        return jsonrpc.error(err.rid, err, status=err.status or 400)
    if rpc.notification:
        return jsonrpc.accepted()
    session = Session(town(), principal)
    try:
        result = session.handle(rpc.method, rpc.params)
    except Refused as err:  # a resource's or prompt's operation refused the caller
        audit(principal.id, "POST", PATH, err.status, rpc=rpc.method)
        return jsonrpc.error(rpc.id, err)
    except RpcError as err:
        return jsonrpc.error(rpc.id, err)
    finally:
        outcome = session.outcome
        if outcome is not None and (not outcome.op.read_only or outcome.status in (401, 403)):
            audit(principal.id, "POST", PATH, outcome.status, tool=outcome.op.name)
    return jsonrpc.answer(rpc.id, result)


@mcp.route(PATH, methods=["GET", "DELETE"])
def no_stream() -> Response:
    resp = jsonrpc.error(
        None,
        RpcError(INVALID_REQUEST, "this server answers POST only: no event stream, no sessions"),
        status=405,
    )
    resp.headers["Allow"] = "POST"
    return resp
