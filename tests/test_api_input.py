"""Hostile bodies on every route that reads one: a lone surrogate, nesting thousands deep, an
integer past Python's digit limit, control characters in names, a CLI that is a command line.
Each is a 400 or 422 problem naming what is wrong, never a 5xx, and the town's Redis is exactly
as it was. (Responses are also checked against the OpenAPI document by the SpecClient.)"""

from __future__ import annotations

import inspect

import pytest

from tinytown.api import BLUEPRINTS

from .api_support import app, client  # noqa: F401 - fixtures
from .test_api_errors import assert_problem

# Every route whose view reads a JSON body, with the path it is called on here.
BODY_ROUTES = {
    ("POST", "/v1/agents"): "/v1/agents",
    ("POST", "/v1/agents/prune"): "/v1/agents/prune",
    ("POST", "/v1/tasks/assign"): "/v1/tasks/assign",
    ("POST", "/v1/tasks/<task_id>/complete"): "/v1/tasks/{task}/complete",
    ("POST", "/v1/tasks/<task_id>/fail"): "/v1/tasks/{task}/fail",
    ("POST", "/v1/tasks/<task_id>/cancel"): "/v1/tasks/{task}/cancel",
    ("POST", "/v1/backlog"): "/v1/backlog",
    ("POST", "/v1/backlog/<task_id>/claim"): "/v1/backlog/{task}/claim",
    ("POST", "/v1/backlog/assign-all"): "/v1/backlog/assign-all",
    ("POST", "/v1/messages/send"): "/v1/messages/send",
    ("POST", "/v1/recover"): "/v1/recover",
    ("POST", "/v1/reclaim"): "/v1/reclaim",
    ("POST", "/v1/reclaim/orphan-tasks"): "/v1/reclaim/orphan-tasks",
    ("POST", "/v1/missions"): "/v1/missions",
    ("POST", "/v1/missions/<mission_id>/stop"): "/v1/missions/{mission}/stop",
    ("POST", "/v1/missions/<mission_id>/resume"): "/v1/missions/{mission}/resume",
    ("POST", "/v1/missions/<mission_id>/complete"): "/v1/missions/{mission}/complete",
    ("POST", "/v1/missions/<mission_id>/fail"): "/v1/missions/{mission}/fail",
    ("POST", "/v1/missions/<mission_id>/notes"): "/v1/missions/{mission}/notes",
    ("POST", "/v1/agents/<agent>/unhealthy"): "/v1/agents/alpha/unhealthy",
    ("PATCH", "/v1/missions/<mission_id>/work/<work_item_id>"): "/v1/missions/{mission}/work/w1",
    (
        "POST",
        "/v1/missions/<mission_id>/watches/<watch_id>/snooze",
    ): "/v1/missions/{mission}/watches/x1/snooze",
}

HOSTILE = {
    "lone surrogate": (b'{"description": "x\\ud800y", "name": "a", "to": "alpha"}', 422),
    "deep nesting": (b'{"a": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400),
    "huge integer": (b'{"duration_secs": 1' + b"0" * 5000 + b"}", 400),
    "NaN": (b'{"n": NaN}', 400),
    "not UTF-8": (b'{"description": "\xff\xfe"}', 400),
}


def test_the_list_holds_every_view_that_reads_a_body(app):
    """A new route that reads a body must be added above (and so to the hostile-input tests)."""
    readers = set()
    for rule in app.url_map.iter_rules():
        view = app.view_functions[rule.endpoint]
        if "json_body(" in inspect.getsource(view):
            readers |= {(m, rule.rule) for m in rule.methods - {"HEAD", "OPTIONS", "GET"}}
    assert readers == set(BODY_ROUTES)
    assert len(BLUEPRINTS) == 11


@pytest.fixture
def seeded(client, town):
    """A town with an agent, a pending task and a mission, so paths resolve; returns a function
    giving every key's dump (to prove nothing changed)."""
    assert client.post("/v1/agents", json={"name": "alpha"}).status_code == 201
    task = town.tasks.add("seed")
    mission = client.post(
        "/v1/missions", json={"objectives": [{"type": "doc", "path": "plan.md"}]}
    ).get_json()
    ids = {"task": task.id, "mission": mission["mission_id"]}

    def snapshot():
        keys = sorted(town.redis.keys(town.keys.town_pattern()))
        return {k: town.redis.dump(k) for k in keys}

    return ids, snapshot


@pytest.mark.parametrize("payload", HOSTILE, ids=list(HOSTILE))
@pytest.mark.parametrize("route", BODY_ROUTES, ids=[f"{m} {r}" for m, r in BODY_ROUTES])
def test_hostile_bodies_get_a_problem_naming_the_fault_and_change_nothing(
    client, seeded, route, payload
):
    ids, snapshot = seeded
    method, _rule = route
    path = BODY_ROUTES[route].format(**ids)
    raw, status = HOSTILE[payload]
    before = snapshot()
    resp = client.open(method, path, data=raw, content_type="application/json")
    body = assert_problem(resp, status)
    assert body["detail"]
    if payload == "lone surrogate":
        assert body["field"] in ("description", "name", "to") and "lone surrogate" in body["detail"]
    assert snapshot() == before


@pytest.mark.parametrize(
    "name", ["bad\nname", "nul\x00", "tab\tname", "sp ace", "-dash", "x" * 65, "ünï"]
)
def test_agent_names_outside_the_documented_set_are_422(client, town, name):
    body = assert_problem(client.post("/v1/agents", json={"name": name}), 422, field="name")
    assert "1-64 characters from A-Z a-z 0-9 . _ -" in body["detail"]
    assert town.agents.all() == []


@pytest.mark.parametrize(
    "field,value",
    [
        ("tags", ["a\nb"]),
        ("tags", ["x"] * 51),
        ("repo", "ext::sh -c id"),
        ("repo", "--upload-pack=id"),
        ("base_branch", "--orphan"),
        ("description", "bell\x07"),
    ],
)
def test_task_fields_break_their_rules_with_422_and_no_task(client, town, field, value):
    body = {"description": "ok", field: value}
    assert_problem(
        client.post("/v1/backlog", json=body),
        422,
        field=field if field != "tags" or len(value) > 1 else "tags[0]",
    )
    assert town.tasks.counts()["pending"] == 0


def test_a_cli_that_is_a_command_line_is_refused_listing_the_names_the_town_runs(client, town):
    """Any holder of town.write could otherwise run any shell command on every worker."""
    for route, body in (
        ("/v1/backlog", {"description": "x", "cli": "id -un; hostname; true"}),
        ("/v1/agents", {"name": "beta", "cli": "id"}),
        ("/v1/backlog", {"description": "x", "cli": "nosuchcli"}),
    ):
        problem = assert_problem(client.post(route, json=body), 422, field="cli")
        assert "claude" in problem["detail"] and "never a command" in problem["detail"]
    assert town.tasks.counts()["pending"] == 0 and town.agents.all() == []


def test_a_configured_cli_name_is_accepted(client, town):
    resp = client.post("/v1/backlog", json={"description": "x", "cli": "codex"})
    assert resp.status_code == 201
    assert town.tasks.get(resp.get_json()["task_id"]).cli == "codex"
