"""Web pages in the user's browser cannot drive a town without auth (``tinytown/api/browsers.py``):
not by a cross-site request (``Origin``), not by a host name re-pointed at 127.0.0.1 (``Host``),
on every route, through a real gunicorn; clients that are not browsers, and towns with keys,
go on as before."""

from __future__ import annotations

import json

import pytest
import requests

from tinytown.api.browsers import local_host, refusal, same_origin
from tinytown.config import load_config
from tinytown.store import Town

from .api_support import keyed_tables, keyring  # noqa: F401 - fixtures
from .conftest import free_port, write_town
from .townhall_support import Townhall

EVIL = "https://evil.example"


@pytest.mark.parametrize(
    "host, local",
    [
        ("localhost", True),
        ("localhost:8080", True),
        ("127.0.0.1:8080", True),
        ("127.1.2.3", True),
        ("[::1]:8080", True),
        ("LOCALHOST:8080", True),
        ("evil.example:8080", False),
        ("127.0.0.1.evil.example", False),
        ("localhost.evil.example:8080", False),
        ("10.0.0.5:8080", False),
        ("[", False),
        ("", False),
        ("[::ffff:127.0.0.1]:8080", False),  # (an IPv4-mapped name: not ::1, refused)
    ],
)
def test_a_host_is_local_only_when_it_names_this_machine(host, local):
    assert local_host(host) is local


@pytest.mark.parametrize(
    "origin, same",
    [
        ("http://127.0.0.1:8080", True),
        ("HTTP://127.0.0.1:8080", True),
        ("http://127.0.0.1:8081", False),
        ("http://localhost:8080", False),  # another origin, though the same machine
        ("null", False),  # a sandboxed frame or a file
        ("http://[", False),
        ("javascript://127.0.0.1:8080", False),
        (EVIL, False),
    ],
)
def test_an_origin_is_the_same_only_when_scheme_host_and_port_match(origin, same):
    assert same_origin(origin, "127.0.0.1:8080") is same


def test_what_is_refused_and_why():
    assert refusal("127.0.0.1:8080", None, open_town=True) is None
    assert refusal("127.0.0.1:8080", "http://127.0.0.1:8080", open_town=True) is None
    assert 'mode = "api_key"' in refusal("evil.example:8080", None, open_town=True)
    assert "evil.example" in refusal("127.0.0.1:8080", EVIL, open_town=True)
    assert refusal("evil.example:8080", None, open_town=False) is None  # keys guard that town
    assert refusal("evil.example:8080", EVIL, open_town=False) is not None  # (/mcp asks this)


@pytest.fixture(scope="module")
def open_hall(tmp_path_factory, redis_url):
    """A townhall as a new user runs it: no auth, on loopback."""
    root, port = tmp_path_factory.mktemp("open-hall"), free_port()
    write_town(root, redis_url, tables=f"[townhall]\nrest_port = {port}\nworkers = 1\n")
    hall = Townhall(root, port)
    town = Town.connect(load_config(root, env={}))
    try:
        hall.wait_serving()
        yield hall, town
    finally:
        hall.stop()
        town.close()


def _tasks(town: Town) -> int:
    return sum(town.tasks.counts().values())


def test_a_rebound_host_name_gets_403_on_every_route_and_reads_nothing(open_hall):
    hall, town = open_hall
    port = hall.url.rsplit(":", 1)[1]
    for path in ("/v1/status", "/v1/backlog", "/", "/api/scaling", "/health"):
        resp = requests.get(hall.url + path, headers={"Host": f"evil.example:{port}"}, timeout=10)
        assert resp.status_code == 403, (path, resp.text)
        assert resp.headers["Content-Type"] == "application/problem+json"
        assert "answers only requests addressed to this machine" in resp.json()["detail"]
        assert "tasks" not in resp.text
    for host in (f"localhost:{port}", f"127.0.0.1:{port}"):
        assert requests.get(hall.url + "/v1/status", headers={"Host": host}, timeout=10).ok


def test_a_cross_site_post_gets_403_and_writes_nothing_with_a_body_or_without(open_hall):
    hall, town = open_hall
    task = town.tasks.add("to be left alone")
    before = _tasks(town)
    body = json.dumps({"description": "queued by a web page"})
    for headers, data in (
        ({"Content-Type": "application/json"}, body),
        ({"Content-Type": "text/plain"}, body),  # a "simple" request: no preflight
        ({}, None),  # no body at all
    ):
        resp = requests.post(
            hall.url + "/v1/backlog", data=data, headers={**headers, "Origin": EVIL}, timeout=10
        )
        assert resp.status_code == 403, resp.text
    resp = requests.post(
        f"{hall.url}/v1/tasks/{task.id}/cancel", headers={"Origin": EVIL}, timeout=10
    )
    assert resp.status_code == 403, resp.text
    assert _tasks(town) == before
    assert town.tasks.get(task.id).state == "pending"
    same = requests.post(
        hall.url + "/v1/backlog",
        data=body,
        headers={"Content-Type": "application/json", "Origin": hall.url},  # the status page's own
        timeout=10,
    )
    assert same.status_code == 201, same.text


@pytest.mark.parametrize("path, method", [("/mcp", "tools/list"), ("/a2a", "GetAgentCard")])
def test_json_rpc_from_a_page_is_a_json_rpc_403_and_plain_text_a_json_rpc_415(
    open_hall, path, method
):
    hall, town = open_hall
    call = json.dumps({"jsonrpc": "2.0", "id": 3, "method": method, "params": {}})
    page = requests.post(
        hall.url + path,
        data=call,
        headers={"Content-Type": "text/plain", "Origin": EVIL},
        timeout=10,
    )
    assert page.status_code == 403
    assert page.json()["error"]["code"] == -32600 and "evil.example" in page.text
    plain = requests.post(
        hall.url + path, data=call, headers={"Content-Type": "text/plain"}, timeout=10
    )
    assert plain.status_code == 415
    assert plain.json() == {
        "jsonrpc": "2.0",
        "id": None,
        "error": {
            "code": -32600,
            "message": "Content-Type must be application/json, got 'text/plain'",
        },
    }


def test_a_town_with_keys_answers_any_host_name(tmp_path, redis_url, keyring):  # noqa: F811
    port = free_port()
    write_town(
        tmp_path,
        redis_url,
        tables=f"[townhall]\nrest_port = {port}\nworkers = 1\n\n" + keyed_tables(keyring),
    )
    hall = Townhall(tmp_path, port)
    try:
        hall.wait_serving()
        raw = keyring["admin"][0]
        resp = requests.get(
            hall.url + "/v1/status",
            headers={"Host": "townhall.example.org", "Authorization": f"Bearer {raw}"},
            timeout=10,
        )
        assert resp.status_code == 200, resp.text
    finally:
        hall.stop()
