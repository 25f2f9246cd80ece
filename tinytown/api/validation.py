"""Request bodies and query strings: read, check, and say exactly what is wrong.

One path for every body: :func:`json_body` reads at most ``max_body_bytes`` whatever the framing
(``Content-Length`` or chunked: anything longer is 413, never cut), then
:func:`tinytown.core.inputs.decode_json` parses it (UTF-8, depth, number size, valid Unicode) — 400
naming what is wrong. Wrong content type → 415. Fields are read with
:func:`tinytown.ops.args.field` (the operations' own rules, shared by REST, MCP and A2A) — 422
naming the field. Operations check everything before writing, so a rejected request writes
nothing.
"""

from __future__ import annotations

from typing import Any

from flask import current_app, g, request
from werkzeug.exceptions import RequestEntityTooLarge

from tinytown.core import defaults, inputs
from tinytown.core.errors import Problem
from tinytown.core.inputs import type_name
from tinytown.ops.args import field, line, required_text, uuid_param

__all__ = [
    "field",
    "json_body",
    "line",
    "page",
    "query_bool",
    "query_int",
    "required_text",
    "uuid_param",
]

_READ_CHUNK_BYTES = 64 * 1024


def read_body() -> bytes:
    """The request body, at most ``MAX_CONTENT_LENGTH`` bytes; 413 past it, whatever the framing.

    werkzeug's own limit on a chunked body stops reading at the limit and returns what it has,
    so a body one byte over it would be parsed cut; this reads one byte past the limit to know.
    """
    if "body" in g:
        return g.body
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    length = request.content_length
    if length is not None and length > limit:
        raise RequestEntityTooLarge()
    if length is not None:
        data = request.stream.read()
    elif request.environ.get("wsgi.input_terminated"):  # chunked: the server ends the stream
        stream, parts, size = request.environ["wsgi.input"], [], 0
        while chunk := stream.read(min(_READ_CHUNK_BYTES, limit + 1 - size)):
            parts.append(chunk)
            size += len(chunk)
            if size > limit:
                raise RequestEntityTooLarge()
        data = b"".join(parts)
    else:  # no length and no end the server vouches for: nothing can be read safely
        data = b""
    g.body = data
    return data


def json_body(*, optional: bool = False) -> dict[str, Any]:
    """The request's JSON object. ``optional``: an empty body counts as ``{}``."""
    raw = read_body()
    if not raw.strip():
        if optional:
            return {}
        raise Problem(422, "request body is empty; send a JSON object", field="body")
    mimetype = request.mimetype or ""
    if mimetype != "application/json" and not mimetype.endswith("+json"):
        raise Problem(
            415,
            "Content-Type must be application/json, got "
            f"{inputs.printable(request.content_type or 'none')!r}",
        )
    body = inputs.decode_json(raw)
    if not isinstance(body, dict):
        raise Problem(
            422, f"request body must be a JSON object, got {type_name(body)}", field="body"
        )
    return body


def query_int(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    value = int(raw) if raw.isascii() and raw.lstrip("-").isdigit() and len(raw) <= 20 else None
    if value is None or not low <= value <= high:
        raise Problem(
            422,
            f"query parameter {name!r} must be an integer from {low} to {high}, got {raw[:40]!r}",
            field=name,
        )
    return value


def query_bool(name: str, default: bool = False) -> bool:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("1", "true", "yes"):
        return True
    if raw.lower() in ("0", "false", "no"):
        return False
    raise Problem(
        422, f"query parameter {name!r} must be true or false, got {raw[:40]!r}", field=name
    )


def page() -> tuple[int, int]:
    """``offset`` and ``limit`` query parameters."""
    limit = query_int("limit", defaults.TOWNHALL_PAGE_LIMIT, 1, defaults.TOWNHALL_PAGE_LIMIT_MAX)
    offset = query_int("offset", 0, 0, 2**62)
    return offset, limit
