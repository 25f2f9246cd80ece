"""JSON-RPC 2.0 over one POST, as MCP's Streamable HTTP and A2A use it: read a request, answer
it with a result or an error object.

Bodies are read by the one body reader (:func:`tinytown.api.validation.read_body`: the size limit,
UTF-8, depth and number checks) and answered ``application/json``; a malformed one is answered
with the JSON-RPC error that names what is wrong rather than a problem document, because these
clients read JSON-RPC errors: ``-32700`` parse error and ``-32600`` invalid request with a null
id, as JSON-RPC 2.0 has it; ``-32602`` for ``params`` that are not an object, with the request's
id. A body must be sent as JSON (``Content-Type: application/json``; else 415, as REST answers),
so that a web page cannot post a call as a form or as plain text. Batches are refused (neither
protocol uses them any more), and so is a null ``id`` (MCP forbids it; A2A's clients never send
one).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from flask import Response, request

from tinytown.api.validation import read_body
from tinytown.core import inputs
from tinytown.core.inputs import InputError, type_name
from tinytown.core.rpc import (  # noqa: F401  (the codes, for the blueprints)
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    RpcError,
)


@dataclass(frozen=True)
class Call:
    id: str | int | None  # None for a notification (no answer expected)
    method: str
    params: dict
    notification: bool


class BadCall(RpcError):
    """A body that is not a call: its JSON-RPC error, the request's id when the request itself
    was well formed (else None) and the HTTP status to answer with (None: the endpoint's own)."""

    def __init__(self, code: int, message: str, *, rid=None, status: int | None = None):
        super().__init__(code, message)
        self.rid, self.status = rid, status


def read_call() -> Call:
    """The request's JSON-RPC call; :class:`BadCall` if it is not one."""
    mimetype = request.mimetype or ""
    if mimetype != "application/json" and not mimetype.endswith("+json"):
        sent = inputs.printable(request.content_type or "none")[:100]
        message = f"Content-Type must be application/json, got {sent!r}"
        raise BadCall(INVALID_REQUEST, message, status=415)
    try:
        doc = inputs.decode_json(read_body())
    except InputError as err:
        raise BadCall(PARSE_ERROR, f"parse error: {err}") from None
    if isinstance(doc, list):
        raise BadCall(INVALID_REQUEST, "batches are not supported; send one request per POST")
    if not isinstance(doc, dict):
        raise BadCall(INVALID_REQUEST, f"a request must be a JSON object, got {type_name(doc)}")
    rid = doc.get("id")
    if "id" in doc and (isinstance(rid, bool) or not isinstance(rid, (str, int))):
        message = f"'id' must be a string or an integer, got {type_name(rid)}"
        raise BadCall(INVALID_REQUEST, message)
    if doc.get("jsonrpc") != "2.0":
        raise BadCall(INVALID_REQUEST, 'a request must carry "jsonrpc": "2.0"')
    method = doc.get("method")
    if not isinstance(method, str) or not method:
        raise BadCall(INVALID_REQUEST, "a request must name its 'method' (a string)")
    params = doc.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        message = f"'params' must be an object, got {type_name(params)}"
        raise BadCall(INVALID_PARAMS, message, rid=rid)
    return Call(rid, method, params, notification="id" not in doc)


def answer(rid: Any, result: Any, *, status: int = 200, headers: dict | None = None) -> Response:
    return _send({"jsonrpc": "2.0", "id": rid, "result": result}, status, headers)


def error(rid: Any, err: RpcError, *, status: int = 200, headers: dict | None = None) -> Response:
    return _send({"jsonrpc": "2.0", "id": rid, "error": err.to_json()}, status, headers)


def accepted() -> Response:
    """A notification's answer: 202 and no body."""
    return Response(status=202)


def _send(doc: dict, status: int, headers: dict | None) -> Response:
    resp = Response(
        json.dumps(doc, separators=(",", ":")), status=status, mimetype="application/json"
    )
    for name, value in (headers or {}).items():
        resp.headers[name] = value
    return resp
