"""Request bodies and query strings: read, check, and say exactly what is wrong.

One path for every body: :func:`json_body` reads at most ``max_body_bytes`` whatever the framing
(``Content-Length`` or chunked: anything longer is 413, never cut), then
:func:`tinytown.core.inputs.decode_json` parses it (UTF-8, depth, number size, valid Unicode) — 400
naming what is wrong. Wrong content type → 415. Fields are read with :func:`field`, which checks
the JSON type and then the field's rule from :mod:`tinytown.core.inputs` (text, names, tags, branch,
repository) — 422 naming the field. Views check everything before writing, so a rejected
request writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import current_app, g, request
from werkzeug.exceptions import RequestEntityTooLarge

from tinytown.api.problems import Problem
from tinytown.core import defaults, inputs
from tinytown.core.inputs import type_name
from tinytown.core.records import is_uuid

_MISSING = object()
_READ_CHUNK_BYTES = 64 * 1024
_KIND_NAMES = {str: "a string", bool: "a boolean", int: "an integer", list: "an array of strings"}


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


def field(
    body: dict,
    name: str,
    kind: type,
    *,
    required: bool = False,
    default: Any = None,
    rule: Callable[..., Any] | None = None,
    low: int = 0,
    high: int = 2**31 - 1,
) -> Any:
    """``body[name]``: of JSON type ``kind`` (str, bool, int, list of str), then its rule; 422
    naming the field if not.

    A string without a ``rule`` is checked as multi-line text (:func:`tinytown.core.inputs.text`);
    an integer must lie in [``low``, ``high``]; a list's ``rule`` gets the whole list.
    """
    value = body.get(name, _MISSING)
    if value is _MISSING or value is None:
        if required:
            raise Problem(422, f"field {name!r} is required", field=name)
        return default
    ok = (
        isinstance(value, str)
        if kind is str
        else isinstance(value, bool)
        if kind is bool
        else isinstance(value, int) and not isinstance(value, bool)
        if kind is int
        else isinstance(value, list) and all(isinstance(v, str) for v in value)
    )
    if not ok:
        raise Problem(
            422, f"field {name!r} must be {_KIND_NAMES[kind]}, got {type_name(value)}", field=name
        )
    if kind is int:
        return inputs.integer(value, name, low, high)
    if kind is str and rule is None:
        return inputs.text(value, name)
    return rule(value, name) if rule is not None else value


def required_text(body: dict, name: str, *, multiline: bool = True) -> str:
    """A required string with something in it besides whitespace."""
    value = field(
        body, name, str, required=True, rule=lambda v, f: inputs.text(v, f, multiline=multiline)
    )
    if not value.strip():
        raise Problem(422, f"field {name!r} must not be empty", field=name)
    return value


def line(value: str, name: str) -> str:
    """A rule for one-line values without a rule of their own (a path, an artifact)."""
    return inputs.text(value, name, max_chars=defaults.INPUT_MAX_LINE_CHARS, multiline=False)


def uuid_param(value: str, what: str, status: int = 400) -> str:
    """A path id that must be a UUID (upstream answers 400 "Invalid task ID: …")."""
    if not is_uuid(value.lower()):
        raise Problem(
            status,
            f"invalid {what} {inputs.printable(value)!r}: expected a UUID",
            field=what.replace(" ", "_"),
        )
    return value.lower()


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
