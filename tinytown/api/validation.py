"""Request bodies and query strings: parse, check, and say exactly what is wrong.

Wrong content type → 415; malformed JSON → 400 naming the line and column; a missing field or
one of the wrong type → 422 naming the field. Views validate everything before writing, so a
rejected request writes nothing.
"""

from __future__ import annotations

import json
from typing import Any

from flask import request

from .. import defaults
from ..records import is_uuid
from .problems import Problem

_MISSING = object()


def json_body(*, optional: bool = False) -> dict[str, Any]:
    """The request's JSON object. ``optional``: an empty body counts as ``{}``."""
    raw = request.get_data(cache=True)  # raises 413 past MAX_CONTENT_LENGTH
    if not raw.strip():
        if optional:
            return {}
        raise Problem(422, "request body is empty; send a JSON object", field="body")
    mimetype = request.mimetype or ""
    if mimetype != "application/json" and not mimetype.endswith("+json"):
        raise Problem(415, f"Content-Type must be application/json, got {request.content_type or 'none'!r}")
    try:
        body = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise Problem(400, f"request body is not UTF-8 (byte {err.start})") from None
    except json.JSONDecodeError as err:
        raise Problem(400, f"malformed JSON at line {err.lineno}, column {err.colno}: {err.msg}") from None
    if not isinstance(body, dict):
        raise Problem(422, f"request body must be a JSON object, got {_type_name(body)}", field="body")
    return body


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


def field(body: dict, name: str, kind: type, *, required: bool = False, default: Any = None, nonempty: bool = False) -> Any:
    """``body[name]`` checked to be ``kind`` (str, bool, int, list of str); 422 naming it if not."""
    value = body.get(name, _MISSING)
    if value is _MISSING or value is None:
        if required:
            raise Problem(422, f"field {name!r} is required", field=name)
        return default
    expected = {str: "a string", bool: "a boolean", int: "an integer", list: "an array of strings"}[kind]
    ok = (
        isinstance(value, str) if kind is str
        else isinstance(value, bool) if kind is bool
        else isinstance(value, int) and not isinstance(value, bool) if kind is int
        else isinstance(value, list) and all(isinstance(v, str) for v in value)
    )  # fmt: skip
    if not ok:
        raise Problem(422, f"field {name!r} must be {expected}, got {_type_name(value)}", field=name)
    if nonempty and kind is str and not value.strip():
        raise Problem(422, f"field {name!r} must not be empty", field=name)
    return value


def uuid_param(value: str, what: str, status: int = 400) -> str:
    """A path id that must be a UUID (upstream answers 400 "Invalid task ID: …")."""
    if not is_uuid(value.lower()):
        raise Problem(status, f"invalid {what} {value!r}: expected a UUID", field=what.replace(" ", "_"))
    return value.lower()


def query_int(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise Problem(422, f"query parameter {name!r} must be an integer from {low} to {high}, got {raw!r}", field=name)
    return value


def query_bool(name: str, default: bool = False) -> bool:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("1", "true", "yes"):
        return True
    if raw.lower() in ("0", "false", "no"):
        return False
    raise Problem(422, f"query parameter {name!r} must be true or false, got {raw!r}", field=name)


def page() -> tuple[int, int]:
    """``offset`` and ``limit`` query parameters."""
    limit = query_int("limit", defaults.TOWNHALL_PAGE_LIMIT, 1, defaults.TOWNHALL_PAGE_LIMIT_MAX)
    offset = query_int("offset", 0, 0, 2**62)
    return offset, limit
