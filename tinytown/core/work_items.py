"""A mission's work items and policy as a client gives them: checked, and turned into the stored
documents (upstream §4.7's WorkItem, with the fields a task needs). Pure: no I/O.

An item names its dependencies by ``key``; stored, ``depends_on`` holds item ids as upstream's,
and ``depends_on_keys`` the keys as given. Unknown dependencies and cycles are refused, naming
them.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

from tinytown.core import defaults, inputs
from tinytown.core.inputs import InputError, type_name
from tinytown.core.issues import find_cycle, topological_order
from tinytown.core.states import WORK_DEFAULT_STATUS

KINDS = ("design", "implement", "test", "review", "mergegate", "followup")
DEFAULT_KIND = "implement"
# Kinds whose work a reviewer approves first when the policy asks for review (upstream §8.4).
REVIEWED_KINDS = ("implement", "test")
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/#:-]{0,99}")
KEY_RULE = "1-100 characters from A-Z a-z 0-9 . _ - / # :, starting with a letter or digit"

POLICY_DEFAULTS: dict[str, Any] = {
    "max_parallel_items": defaults.MISSION_MAX_PARALLEL_ITEMS,
    "max_attempts": defaults.MISSION_MAX_ATTEMPTS,
    "reviewer_required": False,
    "help_after_secs": defaults.MISSION_HELP_AFTER_SECS,
    # upstream's, kept in the document (no PR watches here: nothing reads them)
    "auto_merge": False,
    "watch_interval_secs": 180,
}
# (key, type, lowest, highest) of each policy field a client may set
POLICY_FIELDS = (
    ("max_parallel_items", int, 1, 100),
    ("max_attempts", int, 1, 20),
    ("reviewer_required", bool, None, None),
    ("help_after_secs", int, 10, 7 * 86400),
    ("auto_merge", bool, None, None),
    ("watch_interval_secs", int, 1, 7 * 86400),
)

ITEM_FIELDS = (
    "key",
    "title",
    "description",
    "kind",
    "depends_on",
    "repo",
    "base_branch",
    "push",
    "cli",
    "owner_role",
    "tags",
    "source_ref",
)

# Work item ids are derived from the mission id and the key, so the same request always names
# the same items (and a retried create cannot make two).
_NAMESPACE = uuid.UUID("5d6c2f43-8a1e-4c55-9a63-1f0e2b7d9c10")


def item_id(mission_id: str, key: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{mission_id}/{key}"))


def _get(raw: dict, name: str, where: str, kind: type, default: Any = None) -> Any:
    value = raw.get(name, default)
    if value is None:
        return default
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        want = {bool: "a boolean", int: "an integer", str: "a string", list: "an array"}[kind]
        raise InputError(
            f"{where}.{name}", f"field '{where}.{name}' must be {want}, got {type_name(value)}"
        )
    return value


def _strings(raw: dict, name: str, where: str) -> list[str]:
    values = _get(raw, name, where, list, [])
    for i, value in enumerate(values):
        if not isinstance(value, str):
            field = f"{where}.{name}[{i}]"
            raise InputError(field, f"field {field!r} must be a string, got {type_name(value)}")
    return values


def parse_policy(raw: Any) -> dict:
    """The mission policy: the defaults with the fields given (each type- and range-checked)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InputError("policy", f"field 'policy' must be an object, got {type_name(raw)}")
    unknown = sorted(set(raw) - {name for name, *_ in POLICY_FIELDS})
    if unknown:
        raise InputError(
            f"policy.{unknown[0]}",
            f"field 'policy.{unknown[0]}' is unknown; a policy has "
            + ", ".join(name for name, *_ in POLICY_FIELDS),
        )
    policy = dict(POLICY_DEFAULTS)
    for name, kind, low, high in POLICY_FIELDS:
        value = _get(raw, name, "policy", kind)
        if value is not None:
            if kind is int:
                inputs.integer(value, f"policy.{name}", low, high)
            policy[name] = value
    return policy


def _key(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise InputError(where, f"field {where!r} must be a string, got {type_name(value)}")
    inputs.text(value, where, max_chars=100, multiline=False)
    if not _KEY.fullmatch(value):
        raise InputError(where, f"field {where!r} is {value!r}; a key is {KEY_RULE}")
    return value


def _item(raw: Any, i: int, cli_rule: Callable[[str, str], str]) -> dict:
    where = f"items[{i}]"
    if not isinstance(raw, dict):
        raise InputError(where, f"field {where!r} must be an object, got {type_name(raw)}")
    unknown = sorted(set(raw) - set(ITEM_FIELDS))
    if unknown:
        raise InputError(
            f"{where}.{unknown[0]}",
            f"field '{where}.{unknown[0]}' is unknown; an item has " + ", ".join(ITEM_FIELDS),
        )
    key = _key(raw.get("key"), f"{where}.key")
    title = _get(raw, "title", where, str)
    if not title or not title.strip():
        raise InputError(f"{where}.title", f"field '{where}.title' is required and not empty")
    kind = _get(raw, "kind", where, str, DEFAULT_KIND)
    if kind not in KINDS:
        raise InputError(
            f"{where}.kind", f"field '{where}.kind' is {kind!r}; expected one of {', '.join(KINDS)}"
        )
    depends = _get(raw, "depends_on", where, list, [])
    if len(depends) > defaults.MISSION_MAX_ITEMS:
        raise InputError(f"{where}.depends_on", f"field '{where}.depends_on' is too long")
    item = {
        "key": key,
        "title": inputs.text(title, f"{where}.title", max_chars=300, multiline=False),
        "description": inputs.text(
            _get(raw, "description", where, str, ""), f"{where}.description"
        ),
        "kind": kind,
        "depends_on_keys": [_key(d, f"{where}.depends_on[{j}]") for j, d in enumerate(depends)],
        "owner_role": None,
        "tags": inputs.tags(_strings(raw, "tags", where), f"{where}.tags"),
        "repo": None,
        "base_branch": None,
        "push": bool(_get(raw, "push", where, bool, False)),
        "cli": None,
        "source_ref": None,
    }
    if (role := _get(raw, "owner_role", where, str)) is not None:
        item["owner_role"] = inputs.name(role, f"{where}.owner_role")
    if (repo := _get(raw, "repo", where, str)) is not None:
        item["repo"] = inputs.repo(repo, f"{where}.repo")
    if (branch := _get(raw, "base_branch", where, str)) is not None:
        item["base_branch"] = inputs.branch(branch, f"{where}.base_branch")
    if (cli := _get(raw, "cli", where, str)) is not None:
        item["cli"] = cli_rule(cli, f"{where}.cli")
    if (ref := _get(raw, "source_ref", where, str)) is not None:
        item["source_ref"] = inputs.text(ref, f"{where}.source_ref", max_chars=300, multiline=False)
    return item


def parse_items(raw: Any, cli_rule: Callable[[str, str], str] = lambda v, _: v) -> list[dict]:
    """Checked work items, each after its dependencies (stable otherwise). ``cli_rule(value,
    field)`` checks an item's ``cli`` against the town's configured CLIs."""
    if not isinstance(raw, list) or not raw:
        raise InputError("items", "field 'items' must be a non-empty array of work items")
    if len(raw) > defaults.MISSION_MAX_ITEMS:
        raise InputError(
            "items",
            f"field 'items' has {len(raw)} work items; at most {defaults.MISSION_MAX_ITEMS}",
        )
    items = [_item(r, i, cli_rule) for i, r in enumerate(raw)]
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        if item["key"] in seen:
            raise InputError(
                f"items[{i}].key",
                f"field 'items[{i}].key' repeats {item['key']!r} (items[{seen[item['key']]}])",
            )
        seen[item["key"]] = i
    for i, item in enumerate(items):
        unknown = [d for d in item["depends_on_keys"] if d not in seen]
        if unknown:
            raise InputError(
                f"items[{i}].depends_on",
                f"field 'items[{i}].depends_on' names unknown item(s): {', '.join(unknown)}",
            )
    graph = {item["key"]: item["depends_on_keys"] for item in items}
    cycle = find_cycle(graph)
    if cycle:
        raise InputError("items", "the work items' dependencies form a cycle: " + " → ".join(cycle))
    order = topological_order(graph)
    by_key = {item["key"]: item for item in items}
    return [by_key[k] for k in order]


def new_item_documents(mission_id: str, items: list[dict], ts: str) -> list[dict]:
    """The stored work items of a new mission (status ``pending``, ids from the keys)."""
    ids = {item["key"]: item_id(mission_id, item["key"]) for item in items}
    return [
        {
            "id": ids[item["key"]],
            "mission_id": mission_id,
            **item,
            "depends_on": [ids[k] for k in item["depends_on_keys"]],
            "status": WORK_DEFAULT_STATUS,
            "assigned_to": None,
            "task_id": None,
            "stage": None,
            "round": 0,
            "dispatches": 0,
            "artifact_refs": [],
            "reviewer_approved": False,
            "result": None,
            "reason": None,
            "created_at": ts,
            "updated_at": ts,
            "progress_at": ts,
            "order": n,
        }
        for n, item in enumerate(items)
    ]
