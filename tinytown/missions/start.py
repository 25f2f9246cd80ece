"""Starting a mission: its work items from what the client gave (items, and issue or document
references compiled into items), checked, then stored — shared by ``POST /v1/missions`` and
``tt mission start``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tinytown.core.inputs import InputError
from tinytown.core.missions import Mission
from tinytown.core.work_items import parse_items, parse_policy
from tinytown.missions.github import compile_refs
from tinytown.store import Town


def objective_items(
    objectives: list[dict],
    *,
    cwd: Path | str = ".",
    gh: str = "gh",
    budget_secs: float | None = None,
) -> tuple[list[dict], list[str]]:
    """Upstream's objectives as work items: each document a ``design`` item, the issues
    compiled through ``gh`` (upstream §8.2; without ``gh``, each issue is titled "Issue #N" and
    a warning says why). Returns the items (dependencies by key) and the warnings."""
    refs = [f"{o['owner']}/{o['repo']}#{o['number']}" for o in objectives if o["type"] == "issue"]
    try:
        items, warnings = (
            compile_refs(refs, cwd=cwd, gh=gh, budget_secs=budget_secs) if refs else ([], [])
        )
    except ValueError as err:  # a bad reference or a cycle among the issues
        raise InputError("objectives", str(err)) from None
    for n, doc in enumerate(o for o in objectives if o["type"] == "doc"):
        items.append(
            {
                "key": f"doc-{n + 1}",
                "title": f"Design from {doc['path']}",
                "description": f"Read {doc['path']} and turn it into a design for this mission.",
                "kind": "design",
                "source_ref": doc["path"],
            }
        )
    return items, warnings


def start_mission(
    town: Town,
    *,
    items: list | None = None,
    objectives: list[dict] = (),
    policy: dict | None = None,
    title: str | None = None,
    cli_rule: Callable[[str, str], str] = lambda value, _: value,
    cwd: Path | str = ".",
    gh: str = "gh",
    budget_secs: float | None = None,
) -> tuple[Mission, list[str]]:
    """Check everything (raising ``InputError`` naming the field), then store the mission with
    its items, ``running``. Returns it and any warnings of the issue compiler."""
    if items is not None and not isinstance(items, list):
        raise InputError("items", "field 'items' must be an array of work items")
    checked_policy = parse_policy(policy)
    compiled, warnings = objective_items(list(objectives), cwd=cwd, gh=gh, budget_secs=budget_secs)
    checked = parse_items(list(items or []) + compiled, cli_rule)
    mission = town.missions.create(
        checked, checked_policy, objectives=list(objectives), title=title
    )
    return mission, warnings
