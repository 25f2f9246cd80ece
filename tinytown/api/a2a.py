"""A2A over HTTP: the agent card (``GET /.well-known/agent-card.json``, public) and JSON-RPC
(``POST /a2a``). The protocol itself is :mod:`tinytown.a2a`; this is its door.

``/a2a`` authenticates as every protected route does (:mod:`.access`) and needs ``town.read``;
each call also needs its operation's scope (SendMessage: ``town.write``; CancelTask:
``town.write``, or ``agent.manage`` for a mission). A denial is HTTP 401 (with
``WWW-Authenticate``) or 403 and a JSON-RPC error carrying REST's sentence. Every SendMessage
and CancelTask, whatever its outcome, and every denial leaves one audit line naming the ``rpc``
(its status: what REST would have answered).

Bodies go through the one body reader (:func:`tinytown.api.jsonrpc.read_call`); a malformed one
is a JSON-RPC error (parse error, invalid request), one not sent as ``application/json`` is 415
and one over ``max_body_bytes`` is 413, each with a JSON-RPC error, so an A2A client always reads
an error it understands. A web page in a browser is refused before this (:mod:`.browsers`).
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, g, request
from werkzeug.exceptions import RequestEntityTooLarge

from tinytown import __version__
from tinytown.a2a import A2AError, agent_card, dialect_of, mutating, serve
from tinytown.a2a.errors import PERMISSION_DENIED, UNAUTHENTICATED
from tinytown.a2a.wire import VERSION_HEADER
from tinytown.api import jsonrpc
from tinytown.api.access import audit, identify
from tinytown.api.auth import Authenticator, AuthError
from tinytown.core.rpc import INVALID_REQUEST, RpcError
from tinytown.ops.table import READ
from tinytown.store import Town

a2a_card = Blueprint("a2a_card", __name__)
a2a = Blueprint("a2a", __name__)
a2a.required_scope = READ  # read by the auth-matrix test and the OpenAPI check
PATH = "/a2a"


def town() -> Town:
    return current_app.config["TOWN"]


@a2a_card.get("/.well-known/agent-card.json")
def card():
    authenticator: Authenticator = current_app.config["AUTHENTICATOR"]
    config = town().config
    base_url = config.townhall.public_url or request.host_url  # behind a proxy: public_url
    return agent_card(config.name, base_url, __version__, secured=authenticator.mode != "none")


def _audit(principal: str, status: int, **extra) -> None:
    audit(principal, "POST", PATH, status, **extra)
    g.audited = True  # the app's own audit hook would log the denial again


def _deny(err: A2AError, principal: str, rpc: str | None = None, rid=None) -> Response:
    _audit(principal, err.status, **({"rpc": rpc} if rpc else {}))
    headers = {"WWW-Authenticate": 'Bearer realm="townhall"'} if err.status == 401 else {}
    return jsonrpc.error(rid, RpcError(err.code, err.message), status=err.status, headers=headers)


@a2a.before_request
def _authenticate():
    """As :func:`tinytown.api.access.protect`, answered in JSON-RPC; before the body is read."""
    try:
        principal = identify()
    except AuthError as err:
        who = err.principal.id if err.principal is not None else "anonymous"
        kind = UNAUTHENTICATED if err.status == 401 else PERMISSION_DENIED
        return _deny(A2AError(kind, err.detail, status=err.status), who)
    if not principal.allows(READ):
        message = f"this route needs the {READ!r} scope"
        return _deny(A2AError(PERMISSION_DENIED, message, status=403), principal.id)
    return None


@a2a.post(PATH)
def rpc():
    principal = g.principal
    try:
        call = jsonrpc.read_call()
    except jsonrpc.BadCall as err:
        return jsonrpc.error(err.rid, err, status=err.status or 200)
    except RequestEntityTooLarge:
        limit = current_app.config["MAX_CONTENT_LENGTH"]
        message = f"the request body is larger than {limit} bytes ([townhall] max_body_bytes)"
        return jsonrpc.error(None, RpcError(INVALID_REQUEST, message), status=413)
    if call.notification:
        message = "an A2A request carries an 'id' (A2A has no notifications); nothing was done"
        return jsonrpc.error(None, RpcError(INVALID_REQUEST, message))
    try:
        result = serve(
            call.method,
            call.params,
            town(),
            principal,
            version=request.headers.get(VERSION_HEADER),
        )
    except A2AError as err:
        if err.denied:
            return _deny(err, principal.id, call.method, call.id)
        if mutating(call.method):
            _audit(principal.id, err.status, rpc=call.method, code=err.code)
        data = dialect_of(call.method).error_data(err)
        return jsonrpc.error(call.id, RpcError(err.code, err.message, data))
    if mutating(call.method):
        _audit(principal.id, 200, rpc=call.method)
    return jsonrpc.answer(call.id, result)
