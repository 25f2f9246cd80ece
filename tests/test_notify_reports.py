"""The scaler reports an unhealthy worker to townhall (``POST /v1/agents/{id}/unhealthy``, scope
agent.manage), which appends ``agent_unhealthy`` to the town's feed: the notifier's
``worker_unhealthy`` ping. The scaler's own hooks still run beside it."""

from __future__ import annotations

import json
import threading

import pytest
from werkzeug.serving import make_server

from tinytown.config.notify import NotifyTarget
from tinytown.core import events as ev
from tinytown.notify.deliver import Notifier
from tinytown.scaler.model import Config as ScalerConfig
from tinytown.scaler.notify import notify

from .api_support import keyed_app, keyed_town, keyring  # noqa: F401 - fixtures
from .test_notify_delivery import FAST, Receiver, until

CONTAINER = "c0ffee" * 10


@pytest.fixture
def reporting_app(keyed_app):  # noqa: F811 - a fixture of a fixture
    assert "reports" in keyed_app.blueprints  # townhall's app serves the route
    return keyed_app


@pytest.fixture
def worker(keyed_town):  # noqa: F811
    return keyed_town.agents.register("w1", "claude")


def post(app, path: str, key: str | None, body) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    resp = app.test_client().post(path, json=body, headers=headers)
    return resp.status_code, resp.get_json()


def unhealthy_events(town) -> list[dict]:
    return [d for d in town.events.read(limit=1000) if d["event_type"] == ev.AGENT_UNHEALTHY]


def test_a_report_appends_agent_unhealthy_and_answers_202(
    reporting_app, keyed_town, keyring, worker
):
    status, body = post(
        reporting_app,
        f"/v1/agents/{worker.id}/unhealthy",
        keyring["manage"][0],
        {"reason": "no heartbeat for 90 s", "outpost": "vm1", "container_id": CONTAINER},
    )
    assert status == 202
    (event,) = unhealthy_events(keyed_town)
    assert body == {"event_id": event["id"], "agent_id": worker.id}
    assert event["agent_id"] == worker.id and event["reason"] == "no heartbeat for 90 s"
    assert event["message"] == (
        "Worker w1 unhealthy on outpost vm1 (container c0ffeec0ffee): no heartbeat for 90 s"
    )
    assert ev.notification_kind(event) == ev.NOTIFY_WORKER_UNHEALTHY


def test_the_agent_may_be_named(reporting_app, keyed_town, keyring, worker):
    status, body = post(
        reporting_app, "/v1/agents/w1/unhealthy", keyring["manage"][0], {"reason": "stuck"}
    )
    assert (status, body["agent_id"]) == (202, worker.id)
    assert unhealthy_events(keyed_town)[0]["message"] == "Worker w1 unhealthy: stuck"


@pytest.mark.parametrize(
    ("key", "body", "status", "field"),
    [
        (None, {"reason": "x"}, 401, None),
        ("read", {"reason": "x"}, 403, None),
        ("manage", {}, 422, "reason"),
        ("manage", {"reason": "   "}, 422, "reason"),
        ("manage", {"reason": "two\nlines"}, 422, "reason"),
        ("manage", {"reason": "x" * 501}, 422, "reason"),
        ("manage", {"reason": "x", "outpost": 3}, 422, "outpost"),
        ("manage", {"reason": "x", "container_id": "a\tb"}, 422, "container_id"),
    ],
)
def test_a_bad_report_is_refused_and_writes_nothing(
    reporting_app, keyed_town, keyring, worker, key, body, status, field
):
    raw = keyring[key][0] if key else None
    got, problem = post(reporting_app, f"/v1/agents/{worker.id}/unhealthy", raw, body)
    assert got == status
    assert problem.get("field") == field
    assert unhealthy_events(keyed_town) == []


def test_an_unknown_agent_is_404(reporting_app, keyring):
    status, problem = post(
        reporting_app,
        "/v1/agents/00000000-0000-4000-8000-000000000000/unhealthy",
        keyring["manage"][0],
        {"reason": "x"},
    )
    assert status == 404 and "not found" in problem["detail"]


@pytest.fixture
def served(reporting_app):
    server = make_server("127.0.0.1", 0, reporting_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def scaler_event(agent_id: str) -> dict:
    return {
        "event": "worker_restarts_exhausted",
        "town": "t",
        "outpost": "local",
        "container_id": CONTAINER,
        "container_name": "tt-worker-1",
        "agent_id": agent_id,
        "reason": "unhealthy: no heartbeat",
        "error": None,
        "restarts": 2,
        "timestamp": "2026-01-01T00:00:00Z",
    }


def test_the_scaler_reports_to_townhall_whose_targets_get_the_ping_and_its_hook_still_runs(
    served, keyed_town, keyring, worker
):
    phone, hook = Receiver(), Receiver()
    try:
        target = NotifyTarget("phone", "ntfy", phone.url("/topic"), timeout_secs=1)
        notifier = Notifier(keyed_town, FAST, targets=(target,))
        notifier.prepare()
        config = ScalerConfig(
            url=served, api_key=keyring["manage"][0], notify_webhook=hook.url("/scaler")
        )
        notify(config, scaler_event(worker.id))
        until(lambda: len(phone.requests) == 1, notifier)
    finally:
        phone.close()
        hook.close()

    (event,) = unhealthy_events(keyed_town)
    assert event["reason"] == "unhealthy: no heartbeat; out of restarts (2 made)"
    assert phone.requests[0]["body"].decode() == (
        "Worker w1 unhealthy on outpost local (container c0ffeec0ffee): "
        "unhealthy: no heartbeat; out of restarts (2 made)"
    )
    assert phone.requests[0]["headers"]["Title"].endswith(": worker unhealthy")
    assert json.loads(hook.requests[0]["body"])["event"] == "worker_restarts_exhausted"


def test_a_refused_report_is_logged_and_the_hook_still_runs(served, keyed_town, keyring, worker):
    hook = Receiver()
    try:
        config = ScalerConfig(
            url=served, api_key=keyring["read"][0], notify_webhook=hook.url("/scaler")
        )
        notify(config, scaler_event(worker.id))  # never raises
    finally:
        hook.close()
    assert unhealthy_events(keyed_town) == []
    assert len(hook.requests) == 1


def test_a_crash_loop_is_not_a_worker_report(served, keyed_town, keyring, worker):
    config = ScalerConfig(url=served, api_key=keyring["manage"][0])
    notify(config, {**scaler_event(worker.id), "event": "outpost_crash_loop"})
    assert unhealthy_events(keyed_town) == []
