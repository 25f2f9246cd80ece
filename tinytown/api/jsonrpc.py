"""JSON-RPC 2.0 over one POST, as MCP's Streamable HTTP and A2A use it: read a request, answer
it with a result or an error object.

Bodies are read by the one body reader (:func:`tinytown.api.validation.read_body`: the size limit,
UTF-8, depth and number checks) and answered ``application/json``; a malformed one is answered
with the JSON-RPC error that names what is wrong (``-32700`` parse error, ``-32600`` invalid
request) rather than a problem document, because these clients read JSON-RPC errors. Batches are
refused (neither protocol uses them any more).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from flask import Response

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


def read_call() -> Call:
    """The request's JSON-RPC call; :class:`RpcError` if it is not one."""
    try:
        doc = inputs.decode_json(read_body())
    except InputError as err:
        raise RpcError(PARSE_ERROR, f"parse error: {err}") from None
    if isinstance(doc, list):
        raise RpcError(INVALID_REQUEST, "batches are not supported; send one request per POST")
    if not isinstance(doc, dict):
        raise RpcError(INVALID_REQUEST, f"a request must be a JSON object, got {type_name(doc)}")
    if doc.get("jsonrpc") != "2.0":
        raise RpcError(INVALID_REQUEST, 'a request must carry "jsonrpc": "2.0"')
    method = doc.get("method")
    if not isinstance(method, str) or not method:
        raise RpcError(INVALID_REQUEST, "a request must name its 'method' (a string)")
    rid = doc.get("id")
    if rid is not None and (isinstance(rid, bool) or not isinstance(rid, (str, int))):
        raise RpcError(
            INVALID_REQUEST, f"'id' must be a string or an integer, got {type_name(rid)}"
        )
    params = doc.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise RpcError(INVALID_PARAMS, f"'params' must be an object, got {type_name(params)}")
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
