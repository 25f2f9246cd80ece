"""A2A on a real townhall (gunicorn, API keys, the session's Redis), driven by the official A2A SDK
as another agent would drive it, with a real worker running the stand-in CLI: the card resolves,
a message becomes a task a worker completes, a data part becomes a mission, cancel and lookup
errors are A2A's, denials are audited, and A2A 0.3 is answered on the same endpoint."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import httpx
import pytest
import requests
from a2a.client import A2ACardResolver, ClientConfig, ClientFactory
from a2a.client.errors import A2AClientError
from a2a.compat.v0_3 import types as types_v03
from a2a.compat.v0_3.jsonrpc_transport import CompatJsonRpcTransport
from a2a.types.a2a_pb2 import (
    CancelTaskRequest,
    GetTaskRequest,
    ListTasksRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    TaskState,
)
from a2a.utils.errors import (
    InvalidParamsError,
    TaskNotCancelableError,
    TaskNotFoundError,
    UnsupportedOperationError,
)
from google.protobuf import json_format, struct_pb2

from tinytown.a2a.views import MISSION_STATE, TASK_STATE
from tinytown.api import create_app
from tinytown.core.apikeys import hash_key
from tinytown.core.states import MISSION_STATES, TASK_STATES

from .api_support import app, client  # noqa: F401 - fixtures
from .conftest import free_port
from .secrets_seen import remember
from .townhall_support import Townhall
from .worker_support import Workers, poll, write_worker_town

KEYS = {
    "agent": ["town.read", "town.write"],
    "reader": ["town.read"],
    "writer": ["town.write"],
    "manager": ["town.read", "agent.manage"],
    "admin": ["admin"],
}
MAX_BODY_BYTES = 64 * 1024


class Hall:
    """The townhall under test: its URL, its raw keys by name, its output."""

    def __init__(self, root: Path, townhall: Townhall, keys: dict[str, str]):
        self.root, self.townhall, self.keys = root, townhall, keys
        self.url = townhall.url
        self.name = next(
            line.split('"')[1]
            for line in (root / "tinytown.toml").read_text().splitlines()
            if line.startswith("name =")
        )

    def rest(self, method: str, path: str, key: str | None = "admin", **kw) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.keys[key]}"} if key else {}
        return requests.request(method, self.url + path, headers=headers, timeout=10, **kw)

    def rpc(
        self, method: str, params: dict, key: str | None = "admin", rid=1, headers=None
    ) -> requests.Response:
        """One JSON-RPC call over plain HTTP (the wire itself, no SDK)."""
        body = {"jsonrpc": "2.0", "id": rid, "method": method, "params": params}
        return self.post_raw(json.dumps(body).encode(), key, headers)

    def post_raw(self, data: bytes, key: str | None = "admin", headers=None) -> requests.Response:
        sent = {"Content-Type": "application/json", **(headers or {})}
        if key:
            sent["Authorization"] = f"Bearer {self.keys[key]}"
        return requests.post(self.url + "/a2a", data=data, headers=sent, timeout=10)

    def counts(self) -> tuple[int, int]:
        """How many tasks and missions the town holds."""
        tasks = self.rest("GET", "/v1/tasks?limit=1").json()["total"]
        missions = self.rest("GET", "/v1/missions?limit=1").json()["total"]
        return tasks, missions

    def audits(self) -> list[dict]:
        return [
            json.loads(line)
            for line in self.townhall.output.splitlines()
            if line.startswith("{") and '"event":"audit"' in line
        ]


@pytest.fixture(scope="module")
def hall(tmp_path_factory, redis_url) -> Hall:
    root = write_worker_town(tmp_path_factory.mktemp("a2a"), redis_url)
    port = free_port()
    raw = {name: remember(f"{name}-a2a-key-{uuid.uuid4().hex}") for name in KEYS}
    tables = [f"[townhall]\nrest_port = {port}\nworkers = 1\nmax_body_bytes = {MAX_BODY_BYTES}\n"]
    tables.append('[townhall.auth]\nmode = "api_key"\n')
    for name, scopes in KEYS.items():
        tables.append(
            f'[[townhall.auth.keys]]\nname = "{name}"\nhash = "{hash_key(raw[name])}"\n'
            f"scopes = {json.dumps(scopes)}\n"
        )
    with open(root / "tinytown.toml", "a") as toml:
        toml.write("\n" + "\n".join(tables))
    townhall = Townhall(root, port)
    try:
        townhall.wait_serving()
        yield Hall(root, townhall, raw)
    finally:
        townhall.stop()


@pytest.fixture
def workers(tmp_path):
    pool = Workers(tmp_path)
    yield pool
    pool.stop_all()


# --- the official SDK, as another agent uses it -----------------------------------------------


def text(value: str) -> Part:
    return Part(text=value)


def data(value: dict) -> Part:
    return Part(data=json_format.ParseDict(value, struct_pb2.Value()))


def message(*parts: Part, context_id: str = "", task_id: str = "") -> Message:
    return Message(
        message_id=str(uuid.uuid4()),
        role=Role.ROLE_USER,
        parts=parts,
        context_id=context_id,
        task_id=task_id,
    )


def with_client(hall: Hall, key: str | None, call, *, version: str | None = None):
    """Resolve the card, make a client from it (the interface of ``version``, else the SDK's
    choice) and return ``await call(client)``."""

    async def go():
        headers = {"Authorization": f"Bearer {hall.keys[key]}"} if key else {}
        async with httpx.AsyncClient(headers=headers, timeout=15) as http:
            card = await A2ACardResolver(http, hall.url).get_agent_card()
            if version is not None:
                kept = [i for i in card.supported_interfaces if i.protocol_version == version]
                del card.supported_interfaces[:]
                card.supported_interfaces.extend(kept)
            client = ClientFactory(ClientConfig(httpx_client=http, streaming=False)).create(card)
            return await call(client)

    return asyncio.run(go())


def send(hall: Hall, msg: Message, key: str | None = "agent", version: str | None = None):
    async def call(client):
        async for event in client.send_message(SendMessageRequest(message=msg)):
            return event

    return with_client(hall, key, call, version=version)


def get(hall: Hall, task_id: str, key: str | None = "agent", version: str | None = None):
    return with_client(hall, key, lambda c: c.get_task(GetTaskRequest(id=task_id)), version=version)


def cancel(hall: Hall, task_id: str, key: str | None = "agent", version: str | None = None):
    return with_client(
        hall, key, lambda c: c.cancel_task(CancelTaskRequest(id=task_id)), version=version
    )


def wait_state(hall: Hall, task_id: str, state, timeout: float = 60):
    return poll(
        lambda: (t := get(hall, task_id)).status.state == state and t,
        timeout=timeout,
        interval=0.3,
        message=f"A2A task {task_id} to reach {TaskState.Name(state)}",
    )


def queued_task(hall: Hall) -> str:
    """A task no worker will take (no worker runs in the test that asks for it)."""
    return send(hall, message(text("wait in the queue"))).task.id


def audit_of(hall: Hall, **match) -> list[dict]:
    return [a for a in hall.audits() if all(a.get(k) == v for k, v in match.items())]


# --- the card -------------------------------------------------------------------------------


def test_the_card_resolves_with_the_sdk_without_credentials_and_names_what_it_offers(hall):
    async def resolve():
        async with httpx.AsyncClient(timeout=10) as http:
            return await A2ACardResolver(http, hall.url).get_agent_card()

    card = asyncio.run(resolve())
    assert card.name == hall.name and card.version
    assert [s.id for s in card.skills] == ["coding-task", "mission", "status"]
    assert all(s.description and s.examples for s in card.skills)
    assert {(i.url, i.protocol_binding, i.protocol_version) for i in card.supported_interfaces} == {
        (f"{hall.url}/a2a", "JSONRPC", "1.0"),
        (f"{hall.url}/a2a", "JSONRPC", "0.3"),
    }
    assert not card.capabilities.streaming and not card.capabilities.push_notifications
    bearer, header = card.security_schemes["bearer"], card.security_schemes["apiKey"]
    assert bearer.http_auth_security_scheme.scheme == "bearer"
    assert (header.api_key_security_scheme.location, header.api_key_security_scheme.name) == (
        "header",
        "X-API-Key",
    )
    assert [set(r.schemes) for r in card.security_requirements] == [{"bearer"}, {"apiKey"}]
    # the same document read as an A2A 0.3 card
    legacy = types_v03.AgentCard.model_validate(
        requests.get(f"{hall.url}/.well-known/agent-card.json", timeout=5).json()
    )
    assert legacy.url == f"{hall.url}/a2a" and legacy.protocol_version.startswith("0.3")
    assert legacy.security_schemes["apiKey"].root.name == "X-API-Key"


def test_every_state_of_ours_has_an_a2a_state():
    assert set(TASK_STATE) == set(TASK_STATES)
    assert set(MISSION_STATE) == set(MISSION_STATES)


# --- work: a task, a mission, the status ------------------------------------------------------


def test_a_text_message_becomes_a_task_that_a_worker_completes_with_its_result_as_artifact(
    hall, workers
):
    sent = send(hall, message(text("[print hello over A2A]"), context_id="ctx-text-1"))
    task = sent.task
    assert task.status.state == TaskState.TASK_STATE_SUBMITTED and task.context_id == "ctx-text-1"
    stored = hall.rest("GET", f"/v1/tasks/{task.id}").json()
    assert stored["description"] == "[print hello over A2A]" and stored["state"] == "Pending"
    assert "a2a-context:ctx-text-1" in stored["tags"]

    workers.start(hall.root, name=f"a2a-{uuid.uuid4().hex[:8]}")
    done = wait_state(hall, task.id, TaskState.TASK_STATE_COMPLETED)
    assert done.context_id == "ctx-text-1"
    [artifact] = done.artifacts
    assert artifact.name == "result" and "hello over A2A" in artifact.parts[0].text
    assert hall.rest("GET", f"/v1/tasks/{task.id}").json()["result"] == artifact.parts[0].text
    assert done.metadata["tinytown"]["state"] == "Completed"


def test_a_data_part_with_items_becomes_a_mission_whose_artifacts_are_the_items_results(
    hall, workers
):
    items = [
        {"key": "design", "title": "Design [print designed the format]"},
        {"key": "build", "title": "Build [print built it]", "depends_on": ["design"]},
    ]
    sent = send(hall, message(data({"title": "A2A mission", "items": items})))
    mission_id = sent.task.id
    shown = hall.rest("GET", f"/v1/missions/{mission_id}").json()
    assert shown["mission"]["title"] == "A2A mission"
    assert [i["key"] for i in shown["work_items"]] == ["design", "build"]
    assert get(hall, mission_id).id == mission_id

    workers.start(hall.root, name=f"a2a-{uuid.uuid4().hex[:8]}")
    done = wait_state(hall, mission_id, TaskState.TASK_STATE_COMPLETED, timeout=90)
    results = {a.name: a.parts[0].text for a in done.artifacts}
    assert len(results) == 2
    assert "designed the format" in results["Design [print designed the format]"]
    assert "built it" in results["Build [print built it]"]
    assert done.metadata["tinytown"]["summary"]["done"] == 2


def test_status_answers_a_message_with_the_towns_status(hall):
    answer = send(hall, message(text("status")), key="agent")
    assert not answer.HasField("task")
    status = json_format.MessageToDict(answer.message.parts[0].data)
    rest = hall.rest("GET", "/v1/status").json()
    assert status["name"] == rest["name"] == hall.name
    assert status["agent_count"] == rest["agent_count"]


# --- cancel and lookups ------------------------------------------------------------------------


def test_cancelling_a_queued_task_makes_it_canceled(hall):
    task_id = queued_task(hall)
    cancelled = cancel(hall, task_id)
    assert cancelled.status.state == TaskState.TASK_STATE_CANCELED
    assert "Cancelled over A2A by agent" in cancelled.status.message.parts[0].text
    assert hall.rest("GET", f"/v1/tasks/{task_id}").json()["state"] == "Cancelled"


def test_cancelling_a_completed_task_is_task_not_cancelable(hall):
    task_id = queued_task(hall)
    done = hall.rest("POST", f"/v1/tasks/{task_id}/complete", json={"result": "done by hand"})
    assert done.status_code == 200
    with pytest.raises(TaskNotCancelableError, match=f"task {task_id} is completed"):
        cancel(hall, task_id)
    assert hall.rest("GET", f"/v1/tasks/{task_id}").json()["state"] == "Completed"


def test_cancelling_a_mission_needs_agent_manage_and_stops_it(hall):
    items = [{"key": "only", "title": "Never runs here"}]
    mission_id = send(hall, message(data({"items": items}))).task.id
    with pytest.raises(A2AClientError, match="403"):
        cancel(hall, mission_id, key="agent")
    cancelled = cancel(hall, mission_id, key="manager")
    assert cancelled.status.state == TaskState.TASK_STATE_CANCELED
    assert hall.rest("GET", f"/v1/missions/{mission_id}").json()["mission"]["state"] == "failed"
    assert get(hall, mission_id).status.state == TaskState.TASK_STATE_CANCELED


def test_an_unknown_id_is_task_not_found_and_a_malformed_one_invalid_params(hall):
    unknown = str(uuid.uuid4())
    with pytest.raises(TaskNotFoundError, match=f"no task or mission {unknown} in this town"):
        get(hall, unknown)
    with pytest.raises(TaskNotFoundError):
        cancel(hall, unknown, key="admin")
    with pytest.raises(InvalidParamsError, match="expected a UUID"):
        get(hall, "not-a-uuid")
    answer = hall.rpc("GetTask", {}).json()
    assert answer["error"]["code"] == -32602 and answer["error"]["message"] == (
        "field 'id' is required"
    )


def test_bad_input_is_invalid_params_with_the_sentence_rest_gives_and_writes_nothing(hall):
    before = hall.counts()
    rest = hall.rest("POST", "/v1/backlog", json={"description": "ring \x07 the bell"})
    assert rest.status_code == 422
    with pytest.raises(InvalidParamsError) as caught:
        send(hall, message(text("ring \x07 the bell")))
    assert caught.value.message == rest.json()["detail"]
    with pytest.raises(InvalidParamsError, match="cycle"):
        items = [{"key": "a", "title": "A", "depends_on": ["a"]}]
        send(hall, message(data({"items": items})))
    assert hall.counts() == before


def test_a_message_for_an_existing_task_is_refused_we_do_not_continue_tasks(hall):
    task_id = queued_task(hall)
    before = hall.counts()
    with pytest.raises(UnsupportedOperationError, match="does not continue a task"):
        send(hall, message(text("and also this"), task_id=task_id))
    with pytest.raises(TaskNotFoundError):
        send(hall, message(text("and also this"), task_id=str(uuid.uuid4())))
    assert hall.counts() == before


# --- auth and audit --------------------------------------------------------------------------


def test_no_key_is_401_with_rests_sentence_and_one_audit_line(hall):
    with pytest.raises(A2AClientError, match="401"):
        send(hall, message(text("anonymous work")), key=None)
    resp = hall.rpc("SendMessage", {}, key=None, rid="anon-1")
    rest = hall.rest("GET", "/v1/tasks", key=None)
    assert resp.status_code == rest.status_code == 401
    assert resp.headers["WWW-Authenticate"] == 'Bearer realm="townhall"'
    assert resp.json()["error"] == {"code": 401, "message": rest.json()["detail"]}
    lines = poll(
        lambda: len(found := audit_of(hall, path="/a2a", status=401)) >= 2 and found,
        message="the 401s' audit lines",
    )
    assert [(a["principal"], a["result"], a["method"]) for a in lines] == [
        ("anonymous", "denied", "POST")
    ] * 2


def test_a_read_only_key_cannot_send_a_message_and_the_denial_is_audited(hall):
    before = hall.counts()
    with pytest.raises(A2AClientError, match="403"):
        send(hall, message(text("a reader's work")), key="reader")
    resp = hall.rpc("SendMessage", {"message": {"parts": [{"text": "x"}]}}, key="reader")
    assert resp.status_code == 403
    assert resp.json()["error"]["message"] == "backlog.add needs the 'town.write' scope"
    assert hall.counts() == before
    denials = poll(
        lambda: len(found := audit_of(hall, principal="reader", rpc="SendMessage")) >= 2 and found,
        message="the reader's audit lines",
    )
    assert {(a["status"], a["result"]) for a in denials} == {(403, "denied")}
    # the same key reads tasks
    assert get(hall, queued_task(hall), key="reader").status.state == (
        TaskState.TASK_STATE_SUBMITTED
    )


def test_a_write_only_key_is_refused_at_the_door_with_rests_sentence(hall):
    resp = hall.rpc("GetTask", {"id": str(uuid.uuid4())}, key="writer")
    assert resp.status_code == 403
    assert resp.json()["error"]["message"] == "this route needs the 'town.read' scope"


def test_each_send_and_cancel_leaves_one_audit_line_naming_the_rpc(hall):
    task_id = send(hall, message(text("audited over A2A"))).task.id
    cancel(hall, task_id)
    get(hall, task_id)  # a read: not audited
    lines = poll(
        lambda: [
            a
            for a in audit_of(hall, principal="agent", path="/a2a")
            if a.get("rpc") in ("SendMessage", "CancelTask")
        ][-2:],
        message="the agent's audit lines",
    )
    assert [(a["rpc"], a["status"], a["result"]) for a in lines] == [
        ("SendMessage", 200, "success"),
        ("CancelTask", 200, "success"),
    ]
    assert not audit_of(hall, principal="agent", rpc="GetTask")


# --- A2A 0.3 -----------------------------------------------------------------------------------


def test_the_0_3_dialect_through_the_sdks_compat_transport(hall):
    async def transport_kind(client):
        return type(client._transport)

    assert with_client(hall, "agent", transport_kind, version="0.3") is CompatJsonRpcTransport
    sent = send(hall, message(text("sent over 0.3"), context_id="ctx-03"), version="0.3")
    assert sent.task.status.state == TaskState.TASK_STATE_SUBMITTED
    assert sent.task.context_id == "ctx-03"
    read = get(hall, sent.task.id, version="0.3")
    assert read.id == sent.task.id and read.context_id == "ctx-03"
    cancelled = cancel(hall, sent.task.id, version="0.3")
    assert cancelled.status.state == TaskState.TASK_STATE_CANCELED
    with pytest.raises(TaskNotFoundError):
        get(hall, str(uuid.uuid4()), version="0.3")


def test_the_wire_shapes_of_both_dialects(hall):
    params_03 = {
        "message": {
            "kind": "message",
            "messageId": "m-03",
            "role": "user",
            "parts": [{"kind": "text", "text": "shape check 0.3"}],
        }
    }
    task_03 = hall.rpc("message/send", params_03, rid="r-03").json()
    assert task_03["id"] == "r-03"
    result = task_03["result"]
    assert result["kind"] == "task" and result["status"]["state"] == "submitted"
    params_10 = {
        "message": {"messageId": "m-10", "role": "ROLE_USER", "parts": [{"text": "shape 1.0"}]}
    }
    result = hall.rpc("SendMessage", params_10).json()["result"]
    assert set(result) == {"task"} and "kind" not in result["task"]
    assert result["task"]["status"]["state"] == "TASK_STATE_SUBMITTED"
    error = hall.rpc("GetTask", {"id": str(uuid.uuid4())}).json()["error"]
    assert error["code"] == -32001 and error["data"][0]["reason"] == "TASK_NOT_FOUND"
    error = hall.rpc("tasks/get", {"id": str(uuid.uuid4())}).json()["error"]
    assert error["code"] == -32001 and "data" not in error


def test_list_tasks_pages_in_creation_order_and_filters_by_state(hall):
    first = queued_task(hall)
    second = queued_task(hall)

    def page(**kw):
        return with_client(hall, "agent", lambda c: c.list_tasks(ListTasksRequest(**kw)))

    head = page(page_size=1)
    assert len(head.tasks) == 1 and head.next_page_token == "1" and head.total_size >= 2
    tail = page(page_size=2, page_token=str(head.total_size - 2))
    assert [t.id for t in tail.tasks] == [first, second] and tail.next_page_token == ""
    assert all(not t.artifacts for t in tail.tasks)
    cancel(hall, second)
    cancelled = page(page_size=100, status=TaskState.TASK_STATE_CANCELED)
    assert second in [t.id for t in cancelled.tasks] and first not in [
        t.id for t in cancelled.tasks
    ]
    assert {t.status.state for t in cancelled.tasks} == {TaskState.TASK_STATE_CANCELED}
    with pytest.raises(InvalidParamsError, match="cannot be listed here"):
        page(status=TaskState.TASK_STATE_SUBMITTED)


# --- what is not offered, and what is not a request ---------------------------------------------


@pytest.mark.parametrize(
    "method,params,code",
    [
        ("SendStreamingMessage", {}, -32004),
        ("message/stream", {}, -32004),
        ("CreateTaskPushNotificationConfig", {}, -32003),
        ("tasks/pushNotificationConfig/set", {}, -32003),
        ("GetExtendedAgentCard", {}, -32007),
        ("tasks/list-everything", {}, -32601),
        ("SendMessage", {"message": {"parts": [{"url": "https://x/y.png"}]}}, -32005),
        ("SendMessage", {"message": {"parts": []}}, -32602),
        (
            "SendMessage",
            {
                "message": {"parts": [{"text": "x"}]},
                "configuration": {"acceptedOutputModes": ["image/png"]},
            },
            -32005,
        ),
    ],
)
def test_what_is_not_offered_answers_its_a2a_error_and_writes_nothing(hall, method, params, code):
    before = hall.counts()
    resp = hall.rpc(method, params)
    assert resp.status_code == 200
    assert resp.json()["error"]["code"] == code and resp.json()["error"]["message"]
    assert hall.counts() == before


def test_an_unserved_a2a_version_is_version_not_supported(hall):
    resp = hall.rpc("GetTask", {"id": str(uuid.uuid4())}, headers={"A2A-Version": "2.0"})
    assert resp.json()["error"]["code"] == -32009


@pytest.mark.parametrize(
    "body,status,code,words",
    [
        (b'{"jsonrpc": "2.0", "method": ', 200, -32700, "parse error"),
        (b'[{"jsonrpc": "2.0", "id": 1, "method": "GetTask"}]', 200, -32600, "batches"),
        (b'{"jsonrpc": "2.0", "method": "SendMessage", "params": {}}', 200, -32600, "'id'"),
        (b'{"jsonrpc": "1.0", "id": 1, "method": "GetTask"}', 200, -32600, "2.0"),
        (b'{"a": ' + b"[" * 5000 + b"]" * 5000 + b"}", 200, -32700, "parse error"),
    ],
    ids=["malformed", "batch", "notification", "not 2.0", "deep"],
)
def test_what_is_not_a_request_gets_a_json_rpc_error_and_writes_nothing(
    hall, body, status, code, words
):
    before = hall.counts()
    resp = hall.post_raw(body)
    assert resp.status_code == status and resp.headers["Content-Type"] == "application/json"
    error = resp.json()["error"]
    assert error["code"] == code and words in error["message"]
    assert resp.json()["id"] is None
    assert hall.counts() == before


def test_an_oversize_body_is_413_before_it_reaches_the_app_and_writes_nothing(hall):
    """Townhall's gunicorn worker refuses it from its Content-Length, as on every route."""
    before = hall.counts()
    resp = hall.post_raw(b'{"pad": "' + b"x" * MAX_BODY_BYTES + b'"}')
    assert resp.status_code == 413 and "max_body_bytes" in resp.json()["detail"]
    assert hall.counts() == before


def test_in_the_app_an_oversize_body_is_a_json_rpc_error(town):
    """Served by another WSGI server, the app itself answers 413 with a JSON-RPC error."""
    app = create_app(town.config, town=town)
    app.config["MAX_CONTENT_LENGTH"] = 1024
    body = {"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {"pad": "x" * 2000}}
    resp = app.test_client().post("/a2a", json=body)
    assert resp.status_code == 413 and resp.mimetype == "application/json"
    assert resp.get_json()["error"] == {
        "code": -32600,
        "message": "the request body is larger than 1024 bytes ([townhall] max_body_bytes)",
    }
    assert town.tasks.list()[1] == 0


def test_the_docs_sdk_example_runs_as_written(hall, workers, capsys):
    """docs/a2a.md's Python example, against this townhall, with a worker to finish the task."""
    doc = (Path(__file__).resolve().parent.parent / "docs" / "a2a.md").read_text()
    example = doc.split("```python\n", 1)[1].split("```", 1)[0]
    example = example.replace("asyncio.sleep(10)", "asyncio.sleep(0.3)")
    example = example.replace(
        'main("http://127.0.0.1:8080", "...")', f"main({hall.url!r}, {hall.keys['agent']!r})"
    )
    workers.start(hall.root, name=f"a2a-{uuid.uuid4().hex[:8]}")
    exec(compile(example, "docs/a2a.md", "exec"), {"__name__": "docs_example"})
    assert capsys.readouterr().out.startswith("TASK_STATE_COMPLETED [")


def test_answers_are_what_the_openapi_document_says(client):
    """Checked by the spec-validating client; in a town without auth, the card asks for none."""
    card = client.get("/.well-known/agent-card.json").get_json()
    assert "securitySchemes" not in card and "security" not in card
    send = {
        "jsonrpc": "2.0",
        "id": "s1",
        "method": "SendMessage",
        "params": {"message": {"messageId": "m1", "parts": [{"text": "documented"}]}},
    }
    assert client.post("/a2a", json=send).get_json()["result"]["task"]["id"]
    unknown = {"jsonrpc": "2.0", "id": 2, "method": "tasks/get", "params": {"id": "x"}}
    assert client.post("/a2a", json=unknown).get_json()["error"]["code"] == -32602
    garbage = client.post("/a2a", data=b"{", content_type="application/json")
    assert garbage.get_json()["error"]["code"] == -32700


def test_behind_a_proxy_the_card_names_the_public_url(town):
    """With ``[townhall] public_url`` the card gives that address, not the one the request
    reached (a proxy's inside address, often plain http)."""
    from dataclasses import replace

    config = town.config
    public = replace(config, townhall=replace(config.townhall, public_url="https://town.example"))
    inside = create_app(config, town=town).test_client()
    assert inside.get("/.well-known/agent-card.json").get_json()["url"] == "http://localhost/a2a"
    town.config = public
    card = create_app(public, town=town).test_client().get("/.well-known/agent-card.json")
    assert card.get_json()["url"] == "https://town.example/a2a"
    assert {i["url"] for i in card.get_json()["supportedInterfaces"]} == {
        "https://town.example/a2a"
    }
