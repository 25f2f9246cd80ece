"""What the town accepts from outside: one set of rules for request bodies, ``tt`` arguments and
anything else a person or program hands in. Pure: plain values in, plain values out.

Every value from outside passes through here before it reaches Redis, a prompt or a log:

- **JSON documents** (:func:`decode_json`): UTF-8, nested at most ``INPUT_MAX_DEPTH`` levels,
  numbers of at most ``INPUT_MAX_NUMBER_CHARS`` characters, no ``NaN``/``Infinity``, and every
  string (keys included) valid Unicode text — no lone surrogates such as ``"\\ud800"``.
- **Text** (:func:`text`): valid Unicode, at most a given length; no control characters except
  newline, carriage return and tab where several lines make sense (descriptions, messages,
  results), none at all in one-line values.
- **Names** (:func:`name`) of agents, roles, nicknames and coding CLIs: 1–64 characters from
  ``A-Z a-z 0-9 . _ -``, starting with a letter or digit.
- **Tags**, **git branch names** and **repository locations** (:func:`repo`), each with its own
  rule below.

A value that breaks a rule raises :class:`InputError`, which names the field and says what is
expected; callers turn it into a 400/422 problem (townhall) or exit status 2 (``tt``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from typing import Any

from tinytown.core import defaults


class InputError(ValueError):
    """A value from outside that breaks a rule. ``field`` names it (``body`` for a whole
    document); ``status`` is 400 for a document that cannot be read, 422 for a field."""

    def __init__(self, field: str, message: str, status: int = 422):
        super().__init__(message)
        self.field, self.status = field, status


# --- JSON documents ---------------------------------------------------------------------------


def _number(kind: str):
    def parse(literal: str):
        if len(literal) > defaults.INPUT_MAX_NUMBER_CHARS:
            raise InputError(
                "body",
                f"a number in the body has {len(literal)} characters; at most "
                f"{defaults.INPUT_MAX_NUMBER_CHARS} are accepted",
                400,
            )
        if kind == "int":
            return int(literal)
        number = float(literal)
        if math.isinf(number):
            raise InputError("body", f"the number {literal} is too large for a 64-bit float", 400)
        return number

    return parse


def _constant(literal: str):
    raise InputError("body", f"{literal} is not a JSON number; send a finite number or null", 400)


def decode_json(raw: bytes) -> Any:
    """Parse a request body: UTF-8 JSON within the limits above, every string valid text.

    Raises :class:`InputError` (status 400) naming what is wrong and where.
    """
    try:
        text_ = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(
            "body", f"the body is not UTF-8 (invalid byte at offset {err.start})", 400
        ) from None
    try:
        value = json.loads(
            text_, parse_int=_number("int"), parse_float=_number("float"), parse_constant=_constant
        )
    except json.JSONDecodeError as err:
        raise InputError(
            "body", f"malformed JSON at line {err.lineno}, column {err.colno}: {err.msg}", 400
        ) from None
    except RecursionError:
        raise InputError(
            "body", f"the JSON is nested deeper than {defaults.INPUT_MAX_DEPTH} levels", 400
        ) from None
    check_document(value)
    return value


def check_document(value: Any, where: str = "body") -> None:
    """Depth and text rules over a decoded document, without recursion (any depth is safe)."""
    stack: list[tuple[Any, str, int]] = [(value, where, 0)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, str):
            _valid_unicode(item, path)
        elif isinstance(item, (dict, list)):
            if depth >= defaults.INPUT_MAX_DEPTH:
                raise InputError(
                    path, f"the JSON is nested deeper than {defaults.INPUT_MAX_DEPTH} levels", 400
                )
            if isinstance(item, dict):
                for key, child in item.items():
                    _valid_unicode(key, f"{path} (a key)")
                    stack.append((child, key if path == "body" else f"{path}.{key}", depth + 1))
            else:
                stack.extend((child, f"{path}[{i}]", depth + 1) for i, child in enumerate(item))


def _valid_unicode(value: str, field: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise InputError(
            field,
            f"field {field!r} is not valid Unicode text: a lone surrogate "
            f"(U+{ord(value[err.start]):04X}) at character {err.start}",
        ) from None


# --- fields -----------------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_MULTILINE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
NAME_RULE = "1-64 characters from A-Z a-z 0-9 . _ -, starting with a letter or digit"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def text(
    value: str,
    field: str,
    *,
    max_chars: int = defaults.INPUT_MAX_TEXT_CHARS,
    multiline: bool = True,
) -> str:
    """Valid Unicode of at most ``max_chars`` characters; control characters refused (newline,
    carriage return and tab allowed when ``multiline``)."""
    _valid_unicode(value, field)
    if len(value) > max_chars:
        raise InputError(
            field, f"field {field!r} has {len(value)} characters; at most {max_chars} are accepted"
        )
    bad = (_CONTROL_MULTILINE if multiline else _CONTROL).search(value)
    if bad:
        raise InputError(
            field,
            f"field {field!r} holds a control character (U+{ord(bad.group()):04X}) at "
            f"character {bad.start()}" + ("" if multiline else "; it must be one line"),
        )
    return value


def name(value: str, field: str) -> str:
    """An agent, role, nickname or coding-CLI name (:data:`NAME_RULE`)."""
    _valid_unicode(value, field)
    if not _NAME.fullmatch(value):
        raise InputError(field, f"field {field!r} is {_shown(value)}; a name is {NAME_RULE}")
    return value


def reference(value: str, field: str) -> str:
    """A reference to an agent: its id, name, nickname or short id (all within :func:`name`)."""
    return name(value.strip(), field)


def tags(values: Iterable[str], field: str = "tags") -> list[str]:
    """At most ``INPUT_MAX_TAGS`` one-line labels of 1–``INPUT_MAX_TAG_CHARS`` characters."""
    out = list(values)
    if len(out) > defaults.INPUT_MAX_TAGS:
        raise InputError(
            field,
            f"field {field!r} has {len(out)} tags; at most {defaults.INPUT_MAX_TAGS} are accepted",
        )
    for i, tag in enumerate(out):
        text(tag, f"{field}[{i}]", max_chars=defaults.INPUT_MAX_TAG_CHARS, multiline=False)
        if not tag.strip() or "," in tag:
            raise InputError(
                f"{field}[{i}]",
                f"field '{field}[{i}]' is {_shown(tag)}; a tag is non-empty and has no comma",
            )
    return out


_BRANCH_BAD = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//")


def branch(value: str, field: str) -> str:
    """A git branch name as ``git check-ref-format --branch`` accepts it, not starting with
    ``-``."""
    text(value, field, max_chars=defaults.INPUT_MAX_BRANCH_CHARS, multiline=False)
    if (
        not value
        or value.startswith(("-", "/", "."))
        or value.endswith(("/", ".", ".lock"))
        or _BRANCH_BAD.search(value)
        or "/." in value
        or value == "@"
    ):
        raise InputError(
            field,
            f"field {field!r} is {_shown(value)}; expected a git branch name (no spaces, "
            "'..', '~^:?*[\\', leading '-' or '.', or trailing '/', '.' or '.lock')",
        )
    return value


REPO_SCHEMES = ("https", "http", "ssh", "git", "file")
REPO_RULE = (
    "a git URL with scheme "
    + ", ".join(f"{s}://" for s in REPO_SCHEMES)
    + ", an scp-like user@host:path, or a path on the worker"
)
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_SCP_LIKE = re.compile(r"[\w.-]+@[\w.-]+:[^:]")
_TRANSPORT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*::")  # git's <transport>::<address>, e.g. ext::


def repo(value: str, field: str = "repo") -> str:
    """Where a task's repository is: :data:`REPO_RULE`. Git's ``<transport>::`` forms (``ext::``
    runs a command) and anything that could be read as a git option are refused."""
    text(value, field, max_chars=defaults.INPUT_MAX_REPO_CHARS, multiline=False)
    if not value.strip() or value.startswith("-") or value != value.strip():
        raise InputError(field, f"field {field!r} is {_shown(value)}; expected {REPO_RULE}")
    scheme = _SCHEME.match(value)
    if scheme:
        if scheme.group(1).lower() not in REPO_SCHEMES:
            raise InputError(
                field, f"field {field!r} uses the scheme {scheme.group(1)!r}; expected {REPO_RULE}"
            )
        return value
    if _TRANSPORT.match(value):
        raise InputError(
            field,
            f"field {field!r} is {_shown(value)}: git transport forms (<transport>::) are "
            f"refused; expected {REPO_RULE}",
        )
    return value  # scp-like or a path (relative paths are the town's)


def type_name(value: Any) -> str:
    """A JSON value's type as an error message names it (``got an array``)."""
    return {
        dict: "an object",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        type(None): "null",
    }.get(type(value), "a number")


def integer(value: int, field: str, low: int, high: int) -> int:
    if not low <= value <= high:
        raise InputError(
            field, f"field {field!r} is {value}; expected an integer from {low} to {high}"
        )
    return value


def _shown(value: str, width: int = 80) -> str:
    """A value quoted for a message: escaped, and cut if long (it came from outside)."""
    shown = ascii(value[:width])
    return shown + ("…" if len(value) > width else "")


def printable(value: str) -> str:
    """``value`` with anything that is not encodable text replaced (U+FFFD): for what is already
    stored, which the worker must pass on (prompt, commit message) rather than fail on."""
    return _SURROGATE.sub("\ufffd", value)


_SURROGATE = re.compile("[\ud800-\udfff]")
