"""Reading an operation's arguments: one rule per argument, the same sentence for every door.

An operation's arguments arrive as a JSON object (a REST body with its path and query values, an
MCP tool call's ``arguments``, an A2A message's data). :func:`field` checks the JSON type and then
the argument's rule from :mod:`tinytown.core.inputs` (text, names, tags, branch, repository), and
raises :class:`tinytown.core.errors.Problem` 422 naming the argument. Operations check everything
before writing, so a rejected call writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tinytown.core import defaults, inputs
from tinytown.core.errors import Problem
from tinytown.core.inputs import type_name
from tinytown.core.records import is_uuid

_MISSING = object()
_KIND_NAMES = {str: "a string", bool: "a boolean", int: "an integer", list: "an array of strings"}


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
    try:
        if kind is int:
            return inputs.integer(value, name, low, high)
        if kind is str and rule is None:
            return inputs.text(value, name)
        return rule(value, name) if rule is not None else value
    except inputs.InputError as err:  # (the rule's sentence, as the Problem this promises)
        raise Problem(err.status, str(err), field=err.field) from None


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


def paging(args: dict) -> tuple[int, int]:
    """The ``offset`` and ``limit`` arguments of a listing."""
    limit = field(
        args,
        "limit",
        int,
        default=defaults.TOWNHALL_PAGE_LIMIT,
        low=1,
        high=defaults.TOWNHALL_PAGE_LIMIT_MAX,
    )
    return field(args, "offset", int, default=0, high=2**62), limit
