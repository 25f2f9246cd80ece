"""``[[notify]]``: where townhall sends a ping (docs/notifications.md).

Each table is one target: a generic signed webhook, an ntfy topic or a Slack incoming webhook,
with optional filters (which notifications, which missions). URLs and secrets are read here and
never written to a log line, an event or Redis: everything else names a target by ``name``
(``NotifyTarget`` leaves both out of its ``repr``). A secret may stay out of the file:
``secret_env`` names the environment variable that holds it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from tinytown.config.table import Table
from tinytown.core.errors import ConfigError
from tinytown.core.events import NOTIFICATION_KINDS

# Defaults (to move to tinytown/core/defaults.py).
NOTIFY_TIMEOUT_SECS = 10  # one HTTP request to a target, connect and read each
NOTIFY_TIMEOUT_MAX_SECS = 120
NOTIFY_TAGS_MAX = 10

NOTIFY_KINDS = ("webhook", "ntfy", "slack")
NTFY_PRIORITIES = {"min": 1, "low": 2, "default": 3, "high": 4, "urgent": 5}
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Which kind each key is for.
_ONLY_FOR = dict.fromkeys(("secret", "secret_env"), "webhook") | dict.fromkeys(
    ("priority", "tags"), "ntfy"
)
_TAG = re.compile(r"[A-Za-z0-9_+.:-]{1,64}")


@dataclass(frozen=True)
class NotifyTarget:
    """One ``[[notify]]`` table, validated. ``missions`` empty = every mission; ``priority`` is
    ntfy's 1-5 (None = by notification kind)."""

    name: str
    kind: str
    url: str = field(repr=False)
    events: tuple[str, ...] = NOTIFICATION_KINDS
    missions: tuple[str, ...] = ()
    secret: str | None = field(default=None, repr=False)
    priority: int | None = None
    tags: tuple[str, ...] = ()
    timeout_secs: int = NOTIFY_TIMEOUT_SECS


def _list(t: Table, key: str, form: str, check) -> tuple[str, ...] | None:
    """A non-empty list of strings each passing ``check`` (None when the key is absent)."""
    t.seen.add(key)
    if key not in t.data:
        return None
    value = t.data[key]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise t._fail(key, value, form)
    for item in value:
        if not check(item):
            raise t._fail(key, value, f"{form} ({item!r} is not one)")
    return tuple(value)


def _is_uuid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value.lower()
    except ValueError:
        return False


def _is_http_url(value: str) -> bool:
    if any(c.isspace() or ord(c) < 32 for c in value):
        return False
    try:
        parts = urlsplit(value)
        return (
            parts.scheme.lower() in ("http", "https")
            and bool(parts.hostname)
            and (parts.port is None or parts.port > 0)
        )
    except ValueError:  # a bad port or IPv6 literal
        return False


def _priority(t: Table) -> int | None:
    t.seen.add("priority")
    value = t.data.get("priority")
    form = "an integer from 1 to 5 or one of " + ", ".join(f'"{p}"' for p in NTFY_PRIORITIES)
    if value is None:
        return None
    if isinstance(value, str) and value.lower() in NTFY_PRIORITIES:
        return NTFY_PRIORITIES[value.lower()]
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 5:
        return value
    raise t._fail("priority", value, form)


def _secret(t: Table, env: Mapping[str, str]) -> str | None:
    """``secret`` or the variable ``secret_env`` names; the value itself is never shown."""
    t.seen.update(("secret", "secret_env"))
    raw, var = t.data.get("secret"), t.data.get("secret_env")
    where = f"{t.source}: {t._key('secret')}"
    if raw is not None and var is not None:
        raise ConfigError(f"{where} and secret_env are both set; give one of them")
    if raw is not None:
        if not isinstance(raw, str) or not raw:
            raise ConfigError(f"{where} is invalid; expected a non-empty string")
        return raw
    if var is None:
        return None
    if not isinstance(var, str) or not _ENV_NAME.fullmatch(var):
        raise t._fail("secret_env", var, "the name of an environment variable")
    if not env.get(var):
        raise ConfigError(
            f"{t.source}: {t._key('secret_env')} = {var!r}, but the environment variable "
            f"{var} is not set or empty; export it where townhall runs"
        )
    return env[var]


def _target(t: Table, env: Mapping[str, str]) -> NotifyTarget:
    name = t.get("name", None, str, "a name of 1-64 characters from A-Z a-z 0-9 . _ -")
    if name is None or not _NAME.fullmatch(name):
        raise t._fail("name", name, "a name of 1-64 characters from A-Z a-z 0-9 . _ -")
    kind = t.choice("kind", "webhook", NOTIFY_KINDS)
    for key, for_kind in _ONLY_FOR.items():
        if key in t.data and kind != for_kind:
            raise ConfigError(
                f"{t.source}: {t._key(key)} is only for kind = {for_kind!r}; "
                f"this target is kind = {kind!r}"
            )
    url = t.get("url", None, str, "an http:// or https:// URL")
    if url is None or not _is_http_url(url):
        raise t._fail("url", url, "an http:// or https:// URL")
    kinds = ", ".join(f'"{k}"' for k in NOTIFICATION_KINDS)
    events = _list(t, "events", f"a non-empty list from {kinds}", NOTIFICATION_KINDS.__contains__)
    missions = _list(
        t,
        "missions",
        "a non-empty list of mission ids (UUIDs); omit it for every mission",
        _is_uuid,
    )
    tags = _list(t, "tags", "a non-empty list of tags (A-Z a-z 0-9 _ + . : -)", _TAG.fullmatch)
    if tags is not None and len(tags) > NOTIFY_TAGS_MAX:
        raise t._fail("tags", list(tags), f"at most {NOTIFY_TAGS_MAX} tags")
    priority = _priority(t)
    secret = _secret(t, env)
    target = NotifyTarget(
        name=name,
        kind=kind,
        url=url,
        events=events or NOTIFICATION_KINDS,
        missions=tuple(m.lower() for m in missions or ()),
        secret=secret,
        priority=priority,
        tags=tags or (),
        timeout_secs=t.int_range("timeout_secs", NOTIFY_TIMEOUT_SECS, 1, NOTIFY_TIMEOUT_MAX_SECS),
    )
    t.check_unknown()
    return target


def notify_targets(top: Table, env: Mapping[str, str]) -> tuple[NotifyTarget, ...]:
    """Every ``[[notify]]`` table of the file, in order; names unique."""
    top.seen.add("notify")
    raw: Any = top.data.get("notify", [])
    if not isinstance(raw, list):
        raise top._fail("notify", raw, "an array of tables [[notify]]")
    targets = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise ConfigError(f"{top.source}: notify[{i}] must be a table [[notify]], got {item!r}")
        target = _target(Table(item, f"notify[{i}]", top.source), env)
        if any(t.name == target.name for t in targets):
            raise ConfigError(
                f"{top.source}: notify[{i}].name = {target.name!r} is invalid; expected a "
                "name no other [[notify]] table uses"
            )
        targets.append(target)
    return tuple(targets)
