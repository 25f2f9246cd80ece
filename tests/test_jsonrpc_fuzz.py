"""The JSON-RPC doors (MCP's ``/mcp``, A2A's ``/a2a``) and the status page, attacked from outside
through a real townhall (gunicorn, API keys, the session's Redis).

A bounded, derandomized hypothesis fuzz POSTs generated requests, valid-shaped and hostile (wrong
JSON-RPC shapes, ids of every type, wrong argument types, unknown methods and tools, malformed
bytes, lone surrogates, NUL, huge numbers, deep nesting, oversize bodies, every key and none), and
checks every answer: never a 5xx, always a well-formed JSON-RPC 2.0 response (or a 202 for an MCP
notification, or 413 ``application/problem+json`` for an oversize body), the request's id echoed,
no traceback in the answer or the log, and a refused request (an HTTP error, a JSON-RPC error or a
tool error) leaves the town as it was (tasks by state, agents, missions, the event stream).

The status page is checked for escaping of everything a caller can write. Focused regression
tests pin each defect the fuzz and a review found (all fixed): web pages driving a town without
auth (a cross-site POST, a rebound host name), 500s for a malformed ``Origin`` or a skill that is
not a string, a 422 problem document where a JSON-RPC error was due, denials left unaudited, an
id not echoed, a null id answered.
"""

from __future__ import annotations

import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context as currently_fuzzing

from tinytown import ops
from tinytown.a2a.wire import METHODS as A2A_METHODS
from tinytown.config import load_config
from tinytown.core import inputs
from tinytown.core.inputs import InputError
from tinytown.mcp import resources as mcp_resources
from tinytown.store import Town

from .api_support import keyed_tables, keyring  # noqa: F401 - fixtures
from .conftest import free_port, write_town
from .townhall_support import Townhall

MAX_BODY_BYTES = 64 * 1024
TIMEOUT_SECS = 10
FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=250,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
MISSING = object()
SCOPES = {"read": "town.read", "write": "town.write", "manage": "agent.manage"}  # api_support
NO_SUCH_ID = "00000000-0000-4000-8000-000000000000"
ITEMS = [
    {"key": "design", "title": "Design", "description": "write plan.md"},
    {"key": "build", "title": "Build", "description": "do plan.md", "depends_on": ["design"]},
]
GH_KEYS = ("issues", "objectives")  # would run `gh` (up to its time budget): not fuzzed here


# --- the townhalls --------------------------------------------------------------------------


@dataclass
class Hall:
    townhall: Townhall
    root: Path
    town: Town
    keys: dict[str | None, str | None]  # name -> raw key (None: no credentials)
    seeds: dict[str, list[str]]  # ids and names the fuzz aims at

    @property
    def url(self) -> str:
        return self.townhall.url

    def post(
        self, path: str, body: bytes, key: str | None = "admin", headers: dict | None = None
    ) -> requests.Response:
        sent = {"Content-Type": "application/json", **(headers or {})}
        if self.keys.get(key):
            sent["Authorization"] = f"Bearer {self.keys[key]}"
        return requests.post(self.url + path, data=body, headers=sent, timeout=TIMEOUT_SECS)

    def rpc(self, path: str, method: str, params=None, key: str | None = "admin", rid=1, **hdr):
        doc = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            doc["params"] = params
        return self.post(path, json.dumps(doc).encode(), key, hdr or None)

    def tool(self, name: str, arguments: dict, key: str = "admin") -> dict:
        resp = self.rpc("/mcp", "tools/call", {"name": name, "arguments": arguments}, key)
        assert resp.status_code == 200, resp.text
        return resp.json()["result"]

    def ok(self, name: str, arguments: dict) -> dict:
        result = self.tool(name, arguments)
        assert not result["isError"], result["content"][0]["text"]
        return result["structuredContent"]

    def fingerprint(self) -> tuple:
        """The town's state, cheaply: tasks by state, agents, missions, the newest event."""
        t = self.town
        return (
            tuple(sorted(t.tasks.counts().items())),
            len(t.agents.all()),
            t.missions.list(limit=1)[1],
            t.events.last_id(),
        )

    def log_size(self) -> int:
        return len(self.townhall.output)

    def audits(self, since: int, **match) -> list[dict]:
        deadline = time.monotonic() + 1
        while True:
            found = [
                a
                for line in self.townhall.output[since:].splitlines()
                if line.startswith("{") and '"event":"audit"' in line
                if (a := json.loads(line)).items() >= match.items()
            ]
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.05)


def _start(root: Path, redis_url: str, tables: str, keys: dict) -> Hall:
    port = free_port()
    head = f"[townhall]\nrest_port = {port}\nworkers = 1\nmax_body_bytes = {MAX_BODY_BYTES}\n\n"
    # The seeded agent has no worker: with the default 5 s heartbeat its window ended mid-run
    # and the keeper's agent_stopped event changed the fingerprint under an unrelated check.
    quiet = "\n[agent]\nheartbeat_interval_secs = 3600\nclaim_timeout_secs = 7200\n"
    quiet += "\n[missions]\ndispatcher = false\n"
    write_town(root, redis_url, tables=head + tables + quiet)
    townhall = Townhall(root, port)
    townhall.wait_serving()
    return Hall(townhall, root, Town.connect(load_config(root, env={})), keys, {})


def _seed(hall: Hall) -> None:
    agent = f"fz-{uuid.uuid4().hex[:6]}"
    hall.ok("agent.spawn", {"name": agent})
    tasks = [hall.ok("backlog.add", {"description": f"seed {i}"})["task_id"] for i in range(3)]
    mission = hall.ok("mission.start", {"title": "seed", "items": ITEMS})["mission_id"]
    hall.seeds.update(
        agents=[agent, "nobody-here"],
        ids=[*tasks, mission, NO_SUCH_ID, tasks[0].upper(), "nope", ""],
    )


@pytest.fixture(scope="module")
def hall(tmp_path_factory, redis_url, keyring):  # noqa: F811 - the fixture, imported
    """An ``api_key`` townhall: keys ``admin``, ``read`` (town.read), ``write`` (town.write
    only), ``manage`` (agent.manage only); ``bogus`` is a key nobody configured."""
    keys = {name: raw for name, (raw, _) in keyring.items()}
    keys.update({None: None, "bogus": "bogus-" + "1" * 40})
    h = _start(tmp_path_factory.mktemp("jsonrpc-fuzz"), redis_url, keyed_tables(keyring), keys)
    try:
        _seed(h)
        yield h
    finally:
        h.townhall.stop()
        h.town.close()


@pytest.fixture(scope="module")
def open_hall(tmp_path_factory, redis_url):
    """A townhall as installed by default: ``[townhall.auth] mode = "none"``, on loopback."""
    h = _start(tmp_path_factory.mktemp("jsonrpc-open"), redis_url, "", {None: None})
    try:
        yield h
    finally:
        h.townhall.stop()
        h.town.close()


# --- what a good answer is ------------------------------------------------------------------


def _valid_id(doc: dict) -> bool:
    """No id (a notification), or a string or an integer (a null id is refused: MCP forbids it)."""
    rid = doc.get("id")
    return "id" not in doc or (isinstance(rid, (str, int)) and not isinstance(rid, bool))


def _valid_call(doc) -> bool:
    """Whether ``doc`` is a request the server reads (before any method-level check)."""
    return (
        isinstance(doc, dict)
        and doc.get("jsonrpc") == "2.0"
        and isinstance(doc.get("method"), str)
        and bool(doc["method"])
        and _valid_id(doc)
        and isinstance(doc.get("params", {}), (dict, type(None)))
    )


def check_answer(hall: Hall, path: str, sent, resp: requests.Response) -> bool:
    """Assert ``resp`` is a good answer to ``sent`` (the decoded request, or MISSING when the
    bytes were not JSON); return whether the request was refused (nothing may have changed)."""
    where = f"{path} {resp.status_code}: {resp.text[:300]}"
    assert resp.status_code < 500, where
    assert "Traceback" not in resp.text and 'File "/' not in resp.text, where
    if resp.status_code == 413:
        assert resp.headers["Content-Type"].startswith("application/problem+json"), where
        assert "max_body_bytes" in resp.json()["detail"], where
        return True
    if resp.status_code == 202:
        assert path == "/mcp" and resp.content == b"", where
        assert _valid_call(sent) and "id" not in sent, where  # only a notification
        return True
    assert resp.headers["Content-Type"].split(";")[0] == "application/json", where
    doc = resp.json()
    assert isinstance(doc, dict) and doc.get("jsonrpc") == "2.0", where
    assert set(doc) in ({"jsonrpc", "id", "result"}, {"jsonrpc", "id", "error"}), where
    if resp.status_code == 401:
        assert resp.headers.get("WWW-Authenticate", "").startswith("Bearer"), where
    if "error" in doc:
        err = doc["error"]
        assert isinstance(err, dict) and set(err) <= {"code", "message", "data"}, where
        assert isinstance(err["code"], int) and not isinstance(err["code"], bool), where
        assert isinstance(err["message"], str) and err["message"], where
    else:
        assert resp.status_code == 200, where
    good = _valid_call(sent) and "id" in sent
    sent_id = sent.get("id") if isinstance(sent, dict) else None
    readable = isinstance(sent_id, (str, int)) and not isinstance(sent_id, bool)
    if good and resp.status_code == 200:
        assert doc["id"] == sent["id"] and type(doc["id"]) is type(sent["id"]), where
    else:  # an error answered before the id was read (auth, size), or the id as it was sent
        assert doc["id"] is None or (readable and doc["id"] == sent_id), where
    if "error" in doc:
        return True
    result = doc["result"]
    return isinstance(result, dict) and result.get("isError") is True


def send_and_check(hall: Hall, path: str, body: bytes, key, headers=None) -> requests.Response:
    try:  # the documented body rules (UTF-8, depth, numbers, no NaN, no lone surrogate)
        sent = inputs.decode_json(body)
    except InputError:
        sent = MISSING
    before = hall.fingerprint()
    resp = hall.post(path, body, key, headers)
    refused = check_answer(hall, path, sent, resp)
    if currently_fuzzing():  # what the fuzz reached (--hypothesis-show-statistics)
        outcome = "refused" if refused else "done"
        if resp.headers.get("Content-Type") == "application/json":
            outcome += f" {resp.json().get('error', {}).get('code', '')}"
        event(f"{path} {resp.status_code} {outcome}")
    if refused:
        assert hall.fingerprint() == before, f"a refused request wrote: {body[:300]!r}"
    return resp


# --- strategies -----------------------------------------------------------------------------

HOSTILE_TEXT = ["", "\x00", "a\x00b", "\u202etxt", "\ufeff", "\n", "x" * 5000, "<b>x</b>", "é"]
leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([-0.0, 0, 2**63, -(2**63), 1e300]),
    st.text(max_size=12),
    st.sampled_from(HOSTILE_TEXT),
)
json_values = st.recursive(
    leaf,
    lambda kids: (
        st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids, max_size=3)
    ),
    max_leaves=8,
)
ids = st.one_of(
    st.integers(min_value=-(10**20), max_value=10**20),
    st.text(max_size=10),
    st.none(),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([[], {}, [1], {"a": 1}, 0, -0.0, "\x00"]),
)
keys_ = st.sampled_from(["admin", "admin", "admin", "read", "write", "manage", None, "bogus"])


def mostly(good: st.SearchStrategy, bad: st.SearchStrategy) -> st.SearchStrategy:
    """``good`` about 9 times in 10, else ``bad`` (hypothesis favours an integer's bounds, so
    the rare branch is a middle value)."""
    return st.integers(0, 9).flatmap(lambda n: bad if n == 5 else good)


TEXTS = ["fix the flaky test", "status", " Status ", "a\tb\nc", "<b>x</b>", *HOSTILE_TEXT]


def seeded(hall: Hall, kind: str):
    return st.integers(0, 99).map(lambda i: hall.seeds[kind][i % len(hall.seeds[kind])])


def arg_values(hall: Hall):
    return st.one_of(json_values, seeded(hall, "ids"), seeded(hall, "agents"))


def tool_arguments(hall: Hall, op) -> st.SearchStrategy:
    names = [p for p in op.params if p not in GH_KEYS] or ["x"]
    return st.dictionaries(
        st.sampled_from(names) | st.text(max_size=6).filter(lambda k: k not in GH_KEYS),
        arg_values(hall),
        max_size=4,
    )


MCP_METHODS = [
    "initialize",
    "ping",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "prompts/list",
    "prompts/get",
    "logging/setLevel",
    "notifications/initialized",
    "server/discover",
    "TOOLS/CALL",
    "tools/call ",
]


@st.composite
def mcp_requests(draw, hall: Hall):
    method = draw(
        mostly(
            st.sampled_from(
                ["tools/call"] * 6 + ["resources/read", "prompts/get"] * 2 + MCP_METHODS
            ),
            st.text(max_size=12),
        )
    )
    if method == "tools/call":
        op = draw(st.sampled_from(ops.TOOLS))
        name = draw(mostly(st.sampled_from([op.name, *op.aliases]), json_values))
        arguments = draw(mostly(tool_arguments(hall, op), json_values))
        params = draw(
            st.sampled_from(
                [{"name": name, "arguments": arguments}, {"name": name}, {"arguments": arguments}]
            )
        )
    elif method == "resources/read":
        uris = [*mcp_resources.RESOURCES, "tinytown://nope", "tinytown://tasks/"]
        for prefix in ("agents", "tasks", "missions"):
            uris += [f"tinytown://{prefix}/{v}" for v in hall.seeds["ids"] + hall.seeds["agents"]]
        params = {"uri": draw(mostly(st.sampled_from(uris), json_values))}
    elif method == "prompts/get":
        name = draw(st.sampled_from(["conductor.startup_context", "agent.role_hint"]) | json_values)
        args = draw(
            st.fixed_dictionaries(
                {}, optional={"agent_name": seeded(hall, "agents") | leaf, "tags": leaf}
            )
            | json_values
        )
        params = {"name": name, "arguments": args}
    elif method == "initialize":
        params = {"protocolVersion": draw(st.sampled_from(["2025-06-18", "1999-01-01"]) | leaf)}
    else:
        params = draw(st.dictionaries(st.text(max_size=6), json_values, max_size=3))
    return draw(envelopes(method, params))


MUTATIONS = ("jsonrpc", "id", "method", "params", "notification", "no params", "extra")


@st.composite
def envelopes(draw, method, params):
    """The request around ``method`` and ``params``: right 4 times in 5, else with one fault."""
    doc: dict = {
        "jsonrpc": "2.0",
        "id": draw(st.integers(-(10**6), 10**6) | st.text(max_size=8)),
        "method": method,
        "params": params,
    }
    if draw(st.integers(0, 9)) not in (3, 6):
        return doc
    fault = draw(st.sampled_from(MUTATIONS))
    if fault == "jsonrpc":
        doc["jsonrpc"] = draw(st.sampled_from(["1.0", "2", 2.0, None]))
    elif fault == "id":
        doc["id"] = draw(ids)
    elif fault == "method":
        doc["method"] = draw(st.sampled_from([None, 1, "", [], {}]))
    elif fault == "params":
        doc["params"] = draw(json_values)
    elif fault == "notification":
        del doc["id"]
    elif fault == "no params":
        del doc["params"]
    else:
        doc.update(draw(st.dictionaries(st.sampled_from(["result", "error", "extra"]), leaf)))
    return doc


A2A_METHOD_NAMES = [*A2A_METHODS, "tasks/list", "sendMessage", "message/sendx"]
A2A_STATES = ["TASK_STATE_COMPLETED", "TASK_STATE_SUBMITTED", "completed", "failed", "bogus", ""]


@st.composite
def parts(draw, hall: Hall):
    kind = draw(st.sampled_from(["text", "text", "data", "data", "file", "junk"]))
    if kind == "text":
        part = {"text": draw(mostly(st.sampled_from(TEXTS), st.text(max_size=20)))}
    elif kind == "data":
        data = draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "skill": st.sampled_from(["coding-task", "mission", "status", "nope"]),
                    "items": st.just(ITEMS) | st.lists(json_values, max_size=2) | leaf,
                    "title": leaf,
                    "description": leaf,
                    "tags": st.lists(st.text(max_size=5), max_size=3) | leaf,
                    "docs": st.lists(st.text(max_size=8), max_size=2) | leaf,
                    "policy": json_values,
                    "repo": leaf,
                    "cli": leaf,
                    "push": leaf,
                },
            )
            | st.dictionaries(st.text(max_size=6).filter(lambda k: k not in GH_KEYS), json_values)
        )
        part = {"data": data}
    elif kind == "file":
        part = {"file": {"uri": "https://x/y"}, "kind": "file"}
    else:
        part = draw(json_values)
    if isinstance(part, dict) and draw(st.booleans()):
        part["kind"] = draw(st.sampled_from(["text", "data", "file", "other"]) | leaf)
    return part


@st.composite
def a2a_requests(draw, hall: Hall):
    core = ["SendMessage", "message/send", "GetTask", "tasks/get", "CancelTask", "ListTasks"]
    method = draw(mostly(st.sampled_from(core * 4 + A2A_METHOD_NAMES), st.text(max_size=12)))
    message = draw(
        mostly(
            st.fixed_dictionaries(
                {"parts": mostly(st.lists(parts(hall), min_size=1, max_size=3), json_values)},
                optional={
                    "messageId": st.text(max_size=8),
                    "role": st.sampled_from(["ROLE_USER", "user", "agent"]),
                    "contextId": mostly(st.text(max_size=10), leaf),
                    "taskId": mostly(st.none(), seeded(hall, "ids") | leaf),
                },
            ),
            json_values,
        )
    )
    params = draw(
        st.fixed_dictionaries(
            {"message": st.just(message), "id": mostly(seeded(hall, "ids"), leaf)},
            optional={
                "configuration": st.fixed_dictionaries(
                    {},
                    optional={
                        "acceptedOutputModes": st.lists(
                            st.sampled_from(["text/plain", "image/png", "*/*"]) | leaf, max_size=2
                        ),
                        "pushNotificationConfig": json_values,
                    },
                )
                | json_values,
                "pageSize": st.integers(1, 100) | leaf,
                "pageToken": st.sampled_from(["", "0", "1", "999999999999999999", "-1"]) | leaf,
                "status": st.sampled_from(A2A_STATES) | leaf,
                "includeArtifacts": leaf,
                "contextId": leaf,
                "historyLength": leaf,
            },
        )
    )
    return draw(envelopes(method, params))


def _encode(doc) -> bytes:
    return json.dumps(doc).encode()


# --- the fuzz -------------------------------------------------------------------------------


@pytest.fixture
def clean_log(hall):
    """No traceback lands in townhall's log while the test runs."""
    start = hall.log_size()
    yield
    new = hall.townhall.output[start:]
    assert "Traceback" not in new and "event=internal_error" not in new, new[-3000:]


@pytest.mark.parametrize("path, requests_of", [("/mcp", mcp_requests), ("/a2a", a2a_requests)])
@FUZZ
@given(data=st.data())
def test_fuzz(hall, clean_log, path, requests_of, data):
    doc = data.draw(requests_of(hall), label="request")
    key = data.draw(keys_, label="key")
    send_and_check(hall, path, _encode(doc), key)


HOSTILE_BODIES = [
    b"",
    b" ",
    b"{",
    b"\xff\xfe\x00",
    b"\xc3\x28",
    b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"a":"\\ud800"}}',
    b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"\\udc00":1}}',
    b'{"jsonrpc":"2.0","id":"\\ud800","method":"ping"}',
    b'{"jsonrpc":"2.0","id":1,"method":"\\ud800"}',
    b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"a":NaN}}',
    b'{"jsonrpc":"2.0","id":Infinity,"method":"ping"}',
    b'{"jsonrpc":"2.0","id":1e400,"method":"ping"}',
    b'{"jsonrpc":"2.0","id":-0,"method":"ping"}',
    b'{"jsonrpc":"2.0","id":' + b"9" * 5000 + b',"method":"ping"}',
    b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"n":' + b"1" * 4400 + b"}}",
    b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"a":' + b"[" * 40 + b"]" * 40 + b"}}",
    b'{"jsonrpc":"2.0","id":1,"method":"ping","params":' + b"[" * 30000 + b"]" * 30000 + b"}",
    b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"p":"' + b"x" * MAX_BODY_BYTES + b'"}}',
    b'[{"jsonrpc":"2.0","id":1,"method":"ping"}]',
    b"[]",
    b"null",
    b"123",
    b'"ping"',
    b'{"jsonrpc":"2.0","id":1,"id":2,"method":"ping"}',
    b'{"jsonrpc":"2.0","id":1,"method":"ping"} trailing',
    b'\xef\xbb\xbf{"jsonrpc":"2.0","id":1,"method":"ping"}',
    b'{"jsonrpc":"2.0","id":1,"method":"a\\u0000b"}',
    b'{"jsonrpc":"2.0","id":1,"method":"' + b"m" * 60000 + b'"}',
    b'{"jsonrpc":"2.0","method":"tools/call","params":{"name":"backlog.add",'
    b'"arguments":{"description":"a notification"}}}',
    b'{"jsonrpc":"2.0","id":1,"method":"message/send","params":{"message":{"parts":'
    b'[{"text":"' + b"t" * 20000 + b'"}]}}}',
]


@pytest.mark.parametrize("path", ["/mcp", "/a2a"])
@pytest.mark.parametrize("key", ["admin", None])
def test_hostile_bodies(hall, clean_log, path, key):
    for body in HOSTILE_BODIES:
        send_and_check(hall, path, body, key)


@settings(FUZZ, max_examples=150)
@given(body=st.binary(max_size=64), path=st.sampled_from(["/mcp", "/a2a"]), key=keys_)
def test_random_bytes(hall, clean_log, body, path, key):
    send_and_check(hall, path, body, key)


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Type": "text/plain"},
        {"Content-Type": "application/x-www-form-urlencoded"},
        {"Content-Type": "application/json; charset=latin-1"},
        {"MCP-Protocol-Version": "1999-01-01"},
        {"MCP-Protocol-Version": "x" * 4000},
        {"A2A-Version": "9.9"},
        {"A2A-Version": "0.3"},
        {"Accept": "text/event-stream"},
        {"Authorization": "Basic Zm9vOmJhcg=="},
        {"Authorization": "Bearer"},
        {"X-API-Key": "\u00e9" * 10},
        {"Origin": "null"},
        {"Origin": "https://evil.example"},
    ],
)
def test_odd_headers(hall, clean_log, headers):
    for path in ("/mcp", "/a2a"):
        for method in ("tools/call", "SendMessage"):
            params = (
                {"name": "backlog.add", "arguments": {"description": "hdr"}}
                if method == "tools/call"
                else {"message": {"parts": [{"text": "hdr"}]}}
            )
            body = _encode({"jsonrpc": "2.0", "id": 5, "method": method, "params": params})
            send_and_check(hall, path, body, "read", headers)


def test_get_and_delete_on_mcp_and_a2a(hall, clean_log):
    for method in ("GET", "DELETE", "PUT", "PATCH"):
        for path in ("/mcp", "/a2a"):
            resp = requests.request(method, hall.url + path, timeout=TIMEOUT_SECS)
            assert resp.status_code in (401, 405), (method, path, resp.status_code)
            if path == "/mcp" and method in ("GET", "DELETE"):  # the transport's own answer
                assert resp.json()["jsonrpc"] == "2.0" and resp.headers["Allow"] == "POST"
            elif resp.status_code == 405:
                assert resp.headers["Content-Type"].startswith("application/problem+json")


def test_refused_calls_write_nothing(hall, clean_log):
    """Every write, with every key that lacks its scope, refused without a trace in Redis."""
    writes = {
        "backlog.add": {"description": "denied"},
        "agent.spawn": {"name": "denied-agent"},
        "mission.start": {"items": ITEMS},
        "task.cancel": {"task_id": hall.seeds["ids"][0]},
        "mission.stop": {"mission_id": hall.seeds["ids"][3], "force": True},
        "agent.kill": {"agent": hall.seeds["agents"][0]},
    }
    for key in ("read", "manage", "write", None, "bogus"):
        for name, arguments in writes.items():
            body = _encode(
                {
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "tools/call",
                    "params": {"name": name, "arguments": arguments},
                }
            )
            if SCOPES.get(key) == ops.OPERATIONS[name].scope:
                continue  # allowed: not a refusal
            resp = send_and_check(hall, "/mcp", body, key)
            assert resp.status_code in (401, 200)
            if resp.status_code == 200:
                assert resp.json()["result"]["isError"] is True
        for params, method in (
            ({"message": {"parts": [{"text": "denied"}]}}, "SendMessage"),
            ({"message": {"parts": [{"data": {"items": ITEMS}}]}}, "message/send"),
            ({"id": hall.seeds["ids"][1]}, "CancelTask"),
            ({"id": hall.seeds["ids"][3]}, "tasks/cancel"),
        ):
            body = _encode({"jsonrpc": "2.0", "id": 2, "method": method, "params": params})
            resp = send_and_check(hall, "/a2a", body, key)
            assert resp.status_code in (401, 403), (key, method, resp.text)


def test_concurrent_calls(hall, clean_log):
    """Racing claims of one task: exactly one wins; racing sends: one task each; ids kept."""
    agents = [
        hall.ok("agent.spawn", {"name": f"race-{i}-{uuid.uuid4().hex[:4]}"}) for i in range(4)
    ]
    task = hall.ok("backlog.add", {"description": "contested"})["task_id"]
    tasks_before = sum(hall.town.tasks.counts().values())

    def call(i: int):
        if i % 2:
            params = {"name": "backlog.claim", "arguments": {"task_id": task, "agent": ""}}
            params["arguments"]["agent"] = agents[i % 4]["name"]
            return "claim", hall.rpc("/mcp", "tools/call", params, rid=i)
        msg = {"message": {"parts": [{"text": f"race {i}"}]}}
        return "send", hall.rpc("/a2a", "SendMessage", msg, rid=f"r{i}")

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(call, range(48)))
    wins = 0
    for i, (kind, resp) in enumerate(results):
        assert resp.status_code == 200, resp.text
        doc = resp.json()
        assert doc["id"] == (i if kind == "claim" else f"r{i}")
        if kind == "claim":
            wins += not doc["result"]["isError"]
        else:
            assert doc["result"]["task"]["status"]["state"] == "TASK_STATE_SUBMITTED"
    assert wins == 1
    assert sum(hall.town.tasks.counts().values()) == tasks_before + 24


# --- the status page ------------------------------------------------------------------------

MARK = "<zz-inj"
page_text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=30)


@settings(FUZZ, max_examples=12)
@given(text=page_text)
def test_status_page_escapes_what_callers_write(hall, clean_log, text):
    payload = f'{MARK} a="{text}">\'"<script>alert(1)</script>'
    task = hall.ok("backlog.add", {"description": payload})["task_id"]
    hall.ok("task.fail", {"task_id": task, "reason": payload})
    mission = hall.ok("mission.start", {"title": payload, "items": ITEMS})["mission_id"]
    hall.ok("mission.fail", {"mission_id": mission, "reason": payload})
    a2a = hall.rpc("/a2a", "SendMessage", {"message": {"parts": [{"text": payload}]}})
    assert "result" in a2a.json()
    auth = {"Authorization": f"Bearer {hall.keys['read']}"}
    missing = quote(payload.replace("/", ""), safe="")  # the "not found" page names it
    for path in ("/", f"/tasks/{task}", f"/tasks/{missing}"):
        resp = requests.get(hall.url + path, headers=auth, timeout=TIMEOUT_SECS)
        assert resp.status_code in (200, 404), resp.text
        assert resp.headers["Content-Type"].startswith("text/html")
        assert MARK not in resp.text and "<script>" not in resp.text, path
        assert "&lt;zz-inj" in resp.text, path  # the text is shown, escaped


# --- defects the fuzz found, each fixed --------------------------------------------------------


def _task_total(hall: Hall) -> int:
    return sum(hall.town.tasks.counts().values())


def test_a2a_refuses_a_cross_site_simple_post(open_hall):
    before = _task_total(open_hall)
    body = {"message": {"parts": [{"text": "csrf: push my ssh keys somewhere"}]}}
    resp = open_hall.rpc(
        "/a2a",
        "message/send",
        body,
        key=None,
        **{"Content-Type": "text/plain", "Origin": "https://evil.example"},
    )
    assert resp.status_code in (403, 415), resp.text
    assert _task_total(open_hall) == before


def test_mcp_origin_check_is_not_fooled_by_a_rebound_host(open_hall):
    before = _task_total(open_hall)
    port = open_hall.url.rsplit(":", 1)[1]
    params = {"name": "backlog.add", "arguments": {"description": "dns rebinding"}}
    resp = open_hall.rpc(
        "/mcp",
        "tools/call",
        params,
        key=None,
        **{"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"},
    )
    assert resp.status_code == 403, resp.text
    assert _task_total(open_hall) == before


@pytest.mark.parametrize("origin", ["http://[", "http://[::1"])
def test_mcp_malformed_origin_is_refused_not_a_500(hall, origin):
    resp = hall.rpc("/mcp", "ping", key=None, Origin=origin)
    assert resp.status_code == 403, resp.text
    assert resp.json()["jsonrpc"] == "2.0"


@pytest.mark.parametrize("method", ["SendMessage", "message/send"])
@pytest.mark.parametrize("skill", [["status"], {"id": "status"}])
def test_a2a_skill_of_the_wrong_type_is_invalid_params(hall, method, skill):
    before = hall.fingerprint()
    resp = hall.rpc("/a2a", method, {"message": {"parts": [{"data": {"skill": skill}}]}})
    assert resp.status_code == 200, resp.text
    assert resp.json()["error"]["code"] == -32602
    assert hall.fingerprint() == before


@pytest.mark.parametrize("size", [0, -1, 101, 10**20])
def test_a2a_list_tasks_page_size_out_of_range_is_a_jsonrpc_error(hall, size):
    resp = hall.rpc("/a2a", "ListTasks", {"pageSize": size}, key="read")
    assert resp.status_code == 200, resp.text
    assert resp.headers["Content-Type"] == "application/json"
    assert resp.json()["error"]["code"] == -32602


@pytest.mark.parametrize(
    "method, params",
    [
        ("resources/read", {"uri": "tinytown://backlog"}),
        ("prompts/get", {"name": "conductor.startup_context"}),
    ],
)
def test_mcp_resource_and_prompt_denials_are_audited(hall, method, params):
    since = hall.log_size()
    resp = hall.rpc("/mcp", method, params, key="write")  # town.write only: no town.read
    assert "needs the 'town.read' scope" in resp.json()["error"]["message"]
    assert hall.audits(since, principal="write", path="/mcp", result="denied")


@pytest.mark.parametrize("path", ["/mcp", "/a2a"])
def test_the_id_is_echoed_when_params_is_not_an_object(hall, path):
    body = _encode({"jsonrpc": "2.0", "id": 7, "method": "tools/list", "params": [1, 2]})
    doc = hall.post(path, body).json()
    assert doc["error"]["code"] == -32602 and doc["id"] == 7


def test_mcp_refuses_a_null_id(hall):
    body = _encode({"jsonrpc": "2.0", "id": None, "method": "ping"})
    doc = hall.post("/mcp", body).json()
    assert doc.get("error", {}).get("code") == -32600
