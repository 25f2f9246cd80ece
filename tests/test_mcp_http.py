"""Townhall's ``/mcp`` through the official MCP client: a real gunicorn in ``api_key`` mode with
keys made by ``tt auth add-key`` (one admin, one ``town.read`` only), one townhall per module.

Every tool runs its happy path from the shared table (tests/mcp_support.py); its results equal
what its REST route answers for the same state, and its refusals carry the REST problem's
sentence: one code path behind both. Auth is REST's (401 and an audit line without a key, the
scope's name and a ``denied`` audit line for a write with a read key), resources and prompts are
served, and the transport's edges (Origin, GET, bad JSON, notifications) answer as the spec asks.
"""

from __future__ import annotations

import json
import re
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest
import requests
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tinytown import ops
from tinytown.config import load_config
from tinytown.mcp import prompts, resources
from tinytown.mcp.tools import tool_list
from tinytown.store import Town

from .conftest import free_port, write_town
from .mcp_support import BAD_CALLS, CASES, BadCall, Driver, driving, tool_dumps
from .townhall_support import Townhall, add_key

TIMEOUT_SECS = 10


@dataclass
class Hall:
    townhall: Townhall
    root: Path
    admin: str  # raw keys
    reader: str

    @property
    def mcp(self) -> str:
        return f"{self.townhall.url}/mcp"

    def rest(self, method: str, path: str, body: dict | None = None, key: str | None = None):
        headers = {"Authorization": f"Bearer {key or self.admin}"}
        return requests.request(
            method, self.townhall.url + path, json=body, headers=headers, timeout=TIMEOUT_SECS
        )

    def audits(self, *, at_least: int = 1, **match) -> list[dict]:
        """Townhall's audit lines with these fields, once there are ``at_least`` of them or 5 s
        have passed (a line may lag its answer a little); ``at_least=0`` does not wait."""
        deadline = time.monotonic() + 5
        while True:
            found = [
                a
                for line in self.townhall.output.splitlines()
                if line.startswith("{") and '"event":"audit"' in line
                if (a := json.loads(line)).items() >= match.items()
            ]
            if len(found) >= at_least or time.monotonic() > deadline:
                return found
            time.sleep(0.05)


@pytest.fixture(scope="module")
def hall(tmp_path_factory, redis_url):
    root = tmp_path_factory.mktemp("mcp-town")
    port = free_port()
    tables = f"[townhall]\nrest_port = {port}\nworkers = 1\n\n[missions]\ndispatcher = false\n"
    write_town(
        root, redis_url, tables=tables
    )  # no dispatcher: missions stay as the tools leave them
    admin, _ = add_key(root, "admin", "admin")
    reader, _ = add_key(root, "reader", "town.read")
    townhall = Townhall(root, port)
    try:
        townhall.wait_serving()
        yield Hall(townhall, root, admin, reader)
    finally:
        townhall.stop()
    assert "Traceback" not in townhall.output


@pytest.fixture(scope="module")
def town(hall):
    t = Town.connect(load_config(hall.root, env={}))
    yield t
    t.close()


def connect(url: str, key: str | None):
    """The official client on ``url`` with ``Authorization: Bearer <key>`` (none if None)."""

    @asynccontextmanager
    async def session():
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        async with httpx2.AsyncClient(headers=headers, timeout=TIMEOUT_SECS) as http:
            async with Client(streamable_http_client(url, http_client=http)) as client:
                yield client

    return session


@pytest.fixture(scope="module")
def admin(hall, town):
    with driving(connect(hall.mcp, hall.admin), town) as driver:
        yield driver


@pytest.fixture(scope="module")
def reader(hall, town):
    with driving(connect(hall.mcp, hall.reader), town) as driver:
        yield driver


# -- tools: the table, every happy path, and the same answers as REST ---------------------------


def test_every_tool_has_a_happy_path_case():
    assert set(CASES) == {op.name for op in ops.TOOLS}


def test_tools_list_is_the_operations_table(admin):
    listed = tool_dumps(admin.run(admin.client.list_tools))
    assert listed == list(tool_list())
    assert {t["name"] for t in listed} == {op.name for op in ops.TOOLS}


@pytest.mark.parametrize("tool", [op.name for op in ops.TOOLS])
def test_each_tool_does_its_job(admin, tool):
    CASES[tool](admin)


def test_a_task_reads_the_same_through_the_tool_and_rest(admin: Driver, hall):
    task_id = admin.task("compare me")
    assert (
        admin.ok("task.get", {"task_id": task_id})
        == hall.rest("GET", f"/v1/tasks/{task_id}").json()
    )


def steady(doc):
    """``doc`` without ``heartbeat_age_secs``, which grows between two reads of one state."""
    if isinstance(doc, dict):
        return {k: steady(v) for k, v in doc.items() if k != "heartbeat_age_secs"}
    if isinstance(doc, list):
        return [steady(v) for v in doc]
    return doc


def test_agents_read_the_same_through_the_tool_and_rest(admin: Driver, hall):
    name = admin.agent()
    assert steady(admin.ok("agent.list")) == steady(hall.rest("GET", "/v1/agents").json())
    one = hall.rest("GET", f"/v1/agents/{name}").json()
    assert steady(admin.ok("agent.get", {"agent": name})) == steady(one)


def test_a_mission_reads_the_same_through_the_tool_and_rest(admin: Driver, hall):
    mission_id = admin.mission()
    args = {"mission_id": mission_id, "include_events": True}
    rest = hall.rest("GET", f"/v1/missions/{mission_id}?include_events=true").json()
    assert admin.ok("mission.get_status", args) == rest


def test_the_backlog_and_the_town_read_the_same_through_the_tool_and_rest(admin: Driver, hall):
    admin.task()
    assert admin.ok("backlog.list") == hall.rest("GET", "/v1/backlog").json()
    assert admin.ok("town.info") == hall.rest("GET", "/v1/town").json()


@pytest.mark.parametrize("bad", BAD_CALLS, ids=lambda b: b.tool)
def test_bad_arguments_are_a_tool_error_with_the_rest_problems_detail(admin, hall, bad: BadCall):
    result = admin.refused(bad.tool, bad.args)
    method, path, body = bad.rest
    problem = hall.rest(method, path, body).json()
    assert result.content[0].text == problem["detail"] == bad.detail
    assert result.structured_content["status"] == problem["status"] == bad.status


def test_an_unknown_tool_is_a_protocol_error(admin):
    with pytest.raises(MCPError, match="unknown tool 'task.explode'; see tools/list"):
        admin.call("task.explode", {})


# -- auth and audit: REST's ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "detail"),
    [
        (None, "send Authorization: Bearer <key or token> or X-API-Key: <key>"),
        ("tt_not-a-key-of-this-town", "the API key does not match any configured key"),
    ],
    ids=["no key", "wrong key"],
)
def test_a_client_without_a_valid_key_cannot_connect_and_is_audited(hall, town, key, detail):
    before = len(hall.audits(path="/mcp", status=401, at_least=0))
    with pytest.raises(ExceptionGroup) as failed:  # raised from the client's task group
        with driving(connect(hall.mcp, key), town):
            pass
    assert failed.group_contains(MCPError, match=f"^{re.escape(detail)}$", depth=None)
    lines = hall.audits(path="/mcp", status=401, at_least=before + 1)
    assert len(lines) > before
    assert lines[-1]["principal"] == "anonymous" and lines[-1]["result"] == "denied"


def test_a_write_with_a_read_key_is_a_tool_error_naming_the_scope_and_is_audited(reader, hall):
    assert reader.ok("town.info")["name"] == reader.town.config.name  # reading is allowed
    result = reader.refused("backlog.add", {"description": "sneaky"})
    assert result.content[0].text == "backlog.add needs the 'town.write' scope"
    assert result.structured_content["status"] == 403
    [line] = hall.audits(tool="backlog.add", principal="reader")
    assert (line["status"], line["result"], line["path"]) == (403, "denied", "/mcp")


def test_a_write_leaves_an_audit_line_naming_the_principal_and_the_tool(admin, hall):
    name = admin.agent()
    admin.ok("agent.kill", {"agent": name})
    lines = hall.audits(tool="agent.kill", principal="admin")
    assert lines and (lines[-1]["status"], lines[-1]["result"]) == (200, "success")
    assert lines[-1]["method"] == "POST" and lines[-1]["remote"] == "127.0.0.1"
    assert hall.audits(tool="agent.get", at_least=0) == []  # reads are not audited


# -- resources and prompts ---------------------------------------------------------------------


def test_resources_and_templates_are_listed(admin):
    listed = admin.run(admin.client.list_resources).resources
    assert [r.model_dump(by_alias=True, exclude_none=True, mode="json") for r in listed] == (
        resources.resource_list()
    )
    templates = admin.run(admin.client.list_resource_templates).resource_templates
    assert [t.uri_template for t in templates] == [
        t["uriTemplate"] for t in resources.template_list()
    ]


def test_every_resource_and_template_reads_as_its_rest_route(admin: Driver, hall):
    name, task_id, mission_id = admin.agent(), admin.task(), admin.mission()
    reads = {  # listed URI or template → (a URI to read, the REST route of the same operation)
        "tinytown://town/current": ("tinytown://town/current", "/v1/status"),
        "tinytown://agents": ("tinytown://agents", "/v1/agents"),
        "tinytown://backlog": ("tinytown://backlog", "/v1/backlog"),
        "tinytown://missions": ("tinytown://missions", "/v1/missions"),
        "tinytown://agents/{agent_name}": (f"tinytown://agents/{name}", f"/v1/agents/{name}"),
        "tinytown://tasks/{task_id}": (f"tinytown://tasks/{task_id}", f"/v1/tasks/{task_id}"),
        "tinytown://missions/{mission_id}": (
            f"tinytown://missions/{mission_id}",
            f"/v1/missions/{mission_id}",
        ),
    }
    assert set(reads) == set(resources.RESOURCES) | set(resources.TEMPLATES)
    for uri, path in reads.values():
        [content] = admin.run(admin.client.read_resource, uri).contents
        assert (str(content.uri), content.mime_type) == (uri, "application/json")
        assert steady(json.loads(content.text)) == steady(hall.rest("GET", path).json()), uri


def test_an_unknown_resource_is_an_error(admin):
    with pytest.raises(MCPError, match="no resource 'tinytown://nowhere'") as err:
        admin.run(admin.client.read_resource, "tinytown://nowhere")
    assert err.value.code == resources.RESOURCE_NOT_FOUND


def test_prompts_are_listed_and_each_speaks_of_the_town(admin: Driver):
    listed = admin.run(admin.client.list_prompts).prompts
    assert [p.name for p in listed] == [p["name"] for p in prompts.PROMPTS]
    name = admin.agent()
    startup = admin.run(admin.client.get_prompt, "conductor.startup_context", {})
    assert repr(admin.town.config.name) in startup.messages[0].content.text
    hint = admin.run(admin.client.get_prompt, "agent.role_hint", {"agent_name": name})
    assert f"Agent {name} (" in hint.messages[0].content.text


def test_a_role_hint_without_an_agent_is_an_error(admin):
    with pytest.raises(MCPError, match="agent.role_hint needs the 'agent_name' argument"):
        admin.run(admin.client.get_prompt, "agent.role_hint", {})


# -- the transport's edges, by hand --------------------------------------------------------------


def post(hall: Hall, body: bytes | dict, **headers: str) -> requests.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {
        "Authorization": f"Bearer {hall.admin}",
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        **headers,
    }
    return requests.post(hall.mcp, data=data, headers=headers, timeout=TIMEOUT_SECS)


PING = {"jsonrpc": "2.0", "id": 7, "method": "ping"}


def test_a_page_on_another_origin_is_refused(hall):
    resp = post(hall, PING, Origin="https://evil.example")
    assert resp.status_code == 403
    assert (
        "origin 'https://evil.example' may not call this server" in resp.json()["error"]["message"]
    )
    assert post(hall, PING, Origin=hall.townhall.url).json() == {
        "jsonrpc": "2.0",
        "id": 7,
        "result": {},
    }


def test_get_and_delete_are_not_allowed(hall):
    for method in ("GET", "DELETE"):
        resp = requests.request(method, hall.mcp, timeout=TIMEOUT_SECS)
        assert resp.status_code == 405 and resp.headers["Allow"] == "POST", method


def test_malformed_json_is_a_json_rpc_parse_error(hall):
    resp = post(hall, b'{"jsonrpc": "2.0", "id": 1, "method": ')
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == -32700 and resp.json()["id"] is None


def test_a_notification_is_accepted_without_a_body(hall):
    resp = post(hall, {"jsonrpc": "2.0", "method": "notifications/initialized"})
    assert resp.status_code == 202 and resp.content == b""


def test_a_body_over_the_limit_is_refused_before_it_is_read_as_json_rpc(hall):
    padding = "x" * (1024 * 1024)
    resp = post(hall, {**PING, "params": {"padding": padding}})
    assert resp.status_code == 413
    assert resp.headers["Content-Type"] == "application/problem+json"
