"""``tt mcp-stdio`` through the official client's stdio transport: the real console script in a
town directory on the session Redis, one process per module (plus one ``--read-only``).

It lists the tools ``/mcp`` lists, runs every tool's happy path from the shared table
(tests/mcp_support.py), answers bad arguments with REST's sentence, serves resources and
prompts, writes one audit line on stderr per write, and refuses a directory that is not a town.
"""

from __future__ import annotations

import json
import subprocess
from contextlib import contextmanager

import pytest
from mcp.client.client import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.shared.exceptions import MCPError

from tinytown import ops
from tinytown.config import load_config
from tinytown.mcp.tools import tool_list
from tinytown.store import Town

from .conftest import tt_executable, write_town
from .mcp_support import BAD_CALLS, CASES, BadCall, driving, tool_dumps


def audit_lines(path) -> list[dict]:
    return [
        json.loads(line)
        for line in path.read_text().splitlines()
        if line.startswith("{") and '"event":"audit"' in line
    ]


@pytest.fixture(scope="module")
def root(tmp_path_factory, redis_url):
    return write_town(tmp_path_factory.mktemp("stdio-town"), redis_url)


@pytest.fixture(scope="module")
def town(root):
    t = Town.connect(load_config(root, env={}))
    yield t
    t.close()


@contextmanager
def serving(root, town, *flags: str):
    """A driver on ``tt mcp-stdio`` in ``root``, with ``.log``: the file its stderr goes to."""
    log = root / f"stderr{''.join(flags)}.log"
    params = StdioServerParameters(
        command=tt_executable(), args=["mcp-stdio", "--town", str(root), *flags]
    )
    with open(log, "w") as errlog:
        with driving(lambda: Client(stdio_client(params, errlog=errlog)), town) as driver:
            driver.log = log
            yield driver


@pytest.fixture(scope="module")
def local(root, town):
    with serving(root, town) as driver:
        yield driver


@pytest.fixture(scope="module")
def read_only(root, town):
    with serving(root, town, "--read-only") as driver:
        yield driver


def test_every_tool_has_a_happy_path_case():
    assert set(CASES) == {op.name for op in ops.TOOLS}


def test_the_handshake_names_the_town_server_and_its_capabilities(local):
    assert local.client.server_info.name == "tinytown"
    caps = local.client.server_capabilities
    assert caps.tools and caps.resources and caps.prompts
    assert "backlog.add" in local.client.instructions


def test_tools_list_is_what_the_http_server_lists(local):
    assert tool_dumps(local.run(local.client.list_tools)) == list(tool_list())


@pytest.mark.parametrize("tool", [op.name for op in ops.TOOLS])
def test_each_tool_does_its_job(local, tool):
    CASES[tool](local)


@pytest.mark.parametrize("bad", BAD_CALLS, ids=lambda b: b.tool)
def test_bad_arguments_are_a_tool_error_with_the_rest_sentence(local, bad: BadCall):
    result = local.refused(bad.tool, bad.args)
    assert result.content[0].text == bad.detail
    assert result.structured_content["status"] == bad.status


def test_an_unknown_tool_is_a_protocol_error(local):
    with pytest.raises(MCPError, match="unknown tool 'task.explode'; see tools/list"):
        local.call("task.explode", {})


def test_a_write_leaves_one_audit_line_naming_the_local_user_and_the_tool(local):
    task_id = local.task("audited")
    local.ok("task.get", {"task_id": task_id})  # a read is not audited
    lines = [a for a in audit_lines(local.log) if a["tool"] in ("backlog.add", "task.get")]
    assert lines and all(a["tool"] == "backlog.add" for a in lines)
    assert {k: lines[-1][k] for k in ("principal", "transport", "status", "result")} == {
        "principal": "local",
        "transport": "stdio",
        "status": 201,
        "result": "success",
    }


def test_a_resource_reads_as_its_operation(local, town):
    result = local.run(local.client.read_resource, "tinytown://town/current")
    doc = json.loads(result.contents[0].text)
    assert doc["name"] == town.config.name and result.contents[0].mime_type == "application/json"
    with pytest.raises(MCPError, match="no resource 'tinytown://nowhere'"):
        local.run(local.client.read_resource, "tinytown://nowhere")


def test_a_prompt_speaks_of_this_town(local, town):
    result = local.run(local.client.get_prompt, "conductor.startup_context", {})
    assert repr(town.config.name) in result.messages[0].content.text


def test_read_only_lists_and_runs_only_the_tools_that_read(read_only):
    listed = {t.name for t in read_only.run(read_only.client.list_tools).tools}
    assert listed == {op.name for op in ops.TOOLS if op.scope == "town.read"}
    assert read_only.ok("town.info")["name"] == read_only.town.config.name
    refused = read_only.refused("backlog.add", {"description": "sneaky"})
    assert refused.content[0].text == "backlog.add needs the 'town.write' scope"
    assert refused.structured_content["status"] == 403
    denied = [a for a in audit_lines(read_only.log) if a["tool"] == "backlog.add"]
    assert [(a["principal"], a["status"], a["result"]) for a in denied] == [
        ("local", 403, "denied")
    ]


def test_stdout_carries_only_protocol_messages_in_the_handshake_era(root):
    """A client of 2025 (no ``server/discover``), by hand: every stdout line is its answer."""
    proc = subprocess.Popen(
        [tt_executable(), "mcp-stdio", "--town", str(root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        answers = []
        for request in REQUESTS:
            proc.stdin.write(json.dumps(request) + "\n")
            proc.stdin.flush()
            if "id" in request:
                answers.append(json.loads(proc.stdout.readline()))
        proc.stdin.close()  # the end of the session: the server exits
        assert proc.wait(timeout=20) == 0 and proc.stdout.read() == ""
    finally:
        proc.kill()
    assert [a["id"] for a in answers] == [1, 2]
    assert answers[0]["result"]["protocolVersion"] == "2025-06-18"
    assert answers[1]["result"]["structuredContent"]["root"] == str(root)


REQUESTS = [
    {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "by-hand", "version": "0"},
        },
    },
    {"jsonrpc": "2.0", "method": "notifications/initialized"},
    {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "town.info"}},
]


def test_a_directory_that_is_not_a_town_exits_3_with_one_line(tmp_path):
    done = subprocess.run(
        [tt_executable(), "mcp-stdio", "--town", str(tmp_path)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 3 and done.stdout == ""
    assert done.stderr.startswith(f"tt: error: no town in {tmp_path} (from --town)")
    assert len(done.stderr.splitlines()) == 1
