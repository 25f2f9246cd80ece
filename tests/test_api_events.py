"""GET /v1/events: paging with after/next_after, ``$``, the mission filter, precise 400/422s and
scopes (Flask's client, every answer checked against the spec); then the long-poll on a real
gunicorn: waiters are bounded so they never starve the API, an appended event ends a wait at
once, and a stopping worker ends its waits within one slice."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from tinytown.api.feed import WAIT_HEADER, WAITERS
from tinytown.config import load_config
from tinytown.core import defaults
from tinytown.core import events as ev
from tinytown.core.clock import now, to_rfc3339
from tinytown.store import Town

from .api_support import SPEC, anon, app, client, keyed_app, keyed_town, keyring  # noqa: F401
from .conftest import BIN_DIR, CONFIG_ENV, free_port, write_town

ROOT = Path(__file__).resolve().parent.parent
PROMPT_SECS = 1.0  # what "answers at once" means here, on two shared CPUs
SLICE_SECS = defaults.EVENTS_BLOCK_SLICE_MS / 1000


def note(town: Town, text: str = "a note", mission_id: str | None = None) -> str:
    """Append one event; its stream id."""
    return town.events.append(
        ev.event(ev.MISSION_EVENT, text, to_rfc3339(now()), mission_id=mission_id)
    )


# --- pages --------------------------------------------------------------------------------------


def test_pages_follow_next_after_until_the_stream_is_read(client, town):
    tasks = [town.tasks.add(f"task {i}") for i in range(3)]
    first = client.get("/v1/events?limit=2").get_json()
    assert (
        first["count"] == 2 and [e["event_type"] for e in first["events"]] == [ev.TASK_CREATED] * 2
    )
    assert [e["task_id"] for e in first["events"]] == [t.id for t in tasks[:2]]
    assert first["next_after"] == first["events"][-1]["id"]
    second = client.get(f"/v1/events?after={first['next_after']}&limit=2").get_json()
    assert [e["task_id"] for e in second["events"]] == [tasks[2].id]
    assert second["events"][0]["new_state"] == "pending" and second["events"][0]["message"]
    last = client.get(f"/v1/events?after={second['next_after']}").get_json()
    assert last == {"events": [], "next_after": second["next_after"], "count": 0}


def test_a_task_moving_reports_its_old_and_new_state(client, town):
    task = town.tasks.add("fix it")
    town.tasks.cancel(task.id, "duplicate")
    events = client.get("/v1/events").get_json()["events"]
    cancelled = events[-1]
    assert cancelled["event_type"] == ev.TASK_CANCELLED and cancelled["task_id"] == task.id
    assert (cancelled["old_state"], cancelled["new_state"]) == ("pending", "cancelled")
    assert cancelled["reason"] == "duplicate"


def test_after_accepts_a_bare_millisecond_id_and_an_empty_value(client, town):
    eid = note(town)
    assert client.get("/v1/events?after=0").get_json()["events"][0]["id"] == eid
    assert client.get("/v1/events?after=").get_json()["count"] == 1
    ms = int(eid.split("-")[0])
    assert client.get(f"/v1/events?after={ms + 1}").get_json()["count"] == 0


def test_dollar_means_only_new_events_and_resolves_to_the_newest_id(client, town):
    assert client.get("/v1/events?after=$").get_json()["next_after"] == "0-0"  # nothing yet
    old = note(town, "before")
    body = client.get("/v1/events?after=$").get_json()
    assert body == {"events": [], "next_after": old, "count": 0}
    new = note(town, "after")
    later = client.get(f"/v1/events?after={body['next_after']}").get_json()
    assert [e["id"] for e in later["events"]] == [new]


def test_mission_reads_only_that_missions_stream(client, town):
    mission, other = str(uuid.uuid4()), str(uuid.uuid4())
    note(town, "town-wide")
    note(town, "mine", mission)
    note(town, "theirs", other)
    body = client.get(f"/v1/events?mission={mission.upper()}").get_json()
    assert [(e["message"], e["mission_id"]) for e in body["events"]] == [("mine", mission)]
    # ids are the mission stream's own: page on with them, on that stream
    assert (
        client.get(f"/v1/events?mission={mission}&after={body['next_after']}").get_json()["count"]
        == 0
    )
    assert client.get("/v1/events").get_json()["count"] == 3  # the town's stream has them all
    newest = client.get(f"/v1/events?mission={other}&after=$").get_json()["next_after"]
    assert newest > "0-0"
    unknown = client.get(f"/v1/events?mission={uuid.uuid4()}").get_json()
    assert unknown == {"events": [], "next_after": "0-0", "count": 0}


def test_a_wait_ends_as_soon_as_an_event_arrives(client, town):
    after = client.get("/v1/events?after=$").get_json()["next_after"]
    timer = threading.Timer(0.5, note, args=(town, "late"))
    timer.start()
    started = time.monotonic()
    body = client.get(f"/v1/events?after={after}&wait=10").get_json()
    timer.join()
    assert body["count"] == 1 and body["events"][0]["message"] == "late"
    assert time.monotonic() - started < 0.5 + PROMPT_SECS


def test_a_wait_with_nothing_to_report_answers_empty_after_wait_seconds(client):
    started = time.monotonic()
    resp = client.get("/v1/events?after=$&wait=1")
    assert 1.0 <= time.monotonic() - started < 1.0 + PROMPT_SECS
    assert resp.get_json()["count"] == 0 and WAIT_HEADER not in resp.headers


def test_with_every_waiting_place_taken_a_request_is_answered_at_once_as_busy(app, client, town):
    waiters = app.extensions[WAITERS]
    for _ in range(defaults.EVENTS_WAITERS_MAX):
        assert waiters.acquire(blocking=False)
    try:
        started = time.monotonic()
        resp = client.get("/v1/events?after=$&wait=20")
        assert time.monotonic() - started < PROMPT_SECS
        assert resp.status_code == 200 and resp.get_json()["count"] == 0
        assert resp.headers[WAIT_HEADER] == "busy" and resp.headers["Retry-After"] == "1"
        note(town)
        resp = client.get("/v1/events?wait=20")  # busy, but with events: no Retry-After
        assert resp.headers[WAIT_HEADER] == "busy" and resp.get_json()["count"] == 1
        assert "Retry-After" not in resp.headers
    finally:
        for _ in range(defaults.EVENTS_WAITERS_MAX):
            waiters.release()
    assert client.get("/v1/events?wait=1").headers.get(WAIT_HEADER) is None


# --- bad parameters -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query, status, field",
    [
        ("after=abc", 400, "after"),
        ("after=1-2-3", 400, "after"),
        ("after=-1", 400, "after"),
        ("after=%24%24", 400, "after"),
        ("after=%D9%A1-0", 400, "after"),  # an Arabic-Indic digit is not a stream id
        ("after=" + "9" * 21, 400, "after"),
        ("after=18446744073709551616-0", 400, "after"),  # past 64 bits: Redis would refuse it
        ("mission=nope", 400, "mission"),
        ("mission=" + "x" * 36, 400, "mission"),
        ("limit=0", 422, "limit"),
        ("limit=1001", 422, "limit"),
        ("limit=ten", 422, "limit"),
        ("wait=-1", 422, "wait"),
        ("wait=26", 422, "wait"),
        ("wait=1.5", 422, "wait"),
    ],
)
def test_bad_parameters_are_refused_naming_them(client, query, status, field):
    resp = client.get(f"/v1/events?{query}")
    assert resp.status_code == status and resp.mimetype == "application/problem+json"
    body = resp.get_json()
    assert body["field"] == field and f"'{field}'" in body["detail"]


def test_the_largest_stream_id_is_accepted(client):
    top = str(2**64 - 1)
    body = client.get(f"/v1/events?after={top}-{top}").get_json()
    assert body == {"events": [], "next_after": f"{top}-{top}", "count": 0}


# --- the documents ---------------------------------------------------------------------------------


def test_docs_and_spec_name_every_event_type_and_field():
    section = (ROOT / "docs" / "api.md").read_text().split("## Events", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"`([a-z_]+)`", section))
    assert set(ev.EVENT_TYPES) - documented == set()
    assert set(ev.OPTIONAL_FIELDS) - documented == set()
    event = SPEC["components"]["schemas"]["Event"]
    assert set(ev.OPTIONAL_FIELDS) <= set(event["properties"])
    assert all(t in event["properties"]["event_type"]["description"] for t in ev.EVENT_TYPES)


# --- scopes ---------------------------------------------------------------------------------------


def test_the_feed_needs_the_read_scope(anon, keyring):
    assert anon.get("/v1/events").status_code == 401
    assert anon.as_key(keyring["write"][0]).get("/v1/events").status_code == 403
    assert anon.as_key(keyring["manage"][0]).get("/v1/events").status_code == 403
    for key in ("read", "admin", "upstream"):
        assert anon.as_key(keyring[key][0]).get("/v1/events").status_code == 200, key


# --- a real gunicorn --------------------------------------------------------------------------------


@contextmanager
def townhall(root: Path, redis_url: str):
    """gunicorn with the project's config and one worker, serving; yields (base URL, process).
    Stopped by PID if the test has not stopped it."""
    port = free_port()
    write_town(root, redis_url, tables=f"[townhall]\nrest_port = {port}\nworkers = 1\n")
    env = {k: v for k, v in os.environ.items() if k not in CONFIG_ENV}
    with open(root / "gunicorn.log", "w") as log:  # a file, not a pipe nobody drains
        proc = subprocess.Popen(
            [str(BIN_DIR / "gunicorn"), "-c", "python:tinytown.gunicorn_conf", "townhall:app"],
            cwd=root,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while not _serving(base):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"townhall did not start: {(root / 'gunicorn.log').read_text()}")
            time.sleep(0.1)
        yield base, proc
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()


def _serving(base: str) -> bool:
    try:
        return all(requests.get(base + p, timeout=5).ok for p in ("/livez", "/api/scaling"))
    except requests.ConnectionError:
        return False


def _timed_get(url: str, **params) -> tuple[requests.Response, float]:
    """The response and when it came."""
    resp = requests.get(url, params=params, timeout=60)
    return resp, time.monotonic()


@pytest.mark.slow
def test_long_polls_never_starve_the_api_and_end_when_an_event_arrives(tmp_path, redis_url):
    polls = 20
    with townhall(tmp_path, redis_url) as (base, _):
        town = Town.connect(load_config(tmp_path, env={}))
        with ThreadPoolExecutor(polls) as pool:
            started = time.monotonic()
            futures = [
                pool.submit(_timed_get, f"{base}/v1/events", after="$", wait=20)
                for _ in range(polls)
            ]
            busy = polls - defaults.EVENTS_WAITERS_MAX
            deadline = time.monotonic() + 10
            while sum(f.done() for f in futures) < busy and time.monotonic() < deadline:
                time.sleep(0.05)
            answered = [f.result() for f in futures if f.done()]
            assert len(answered) == busy  # the rest wait
            for resp, at in answered:  # past the waiting places: answered at once, not queued
                assert resp.status_code == 200 and resp.json()["count"] == 0
                assert resp.headers[WAIT_HEADER] == "busy" and resp.headers["Retry-After"] == "1"
                assert at - started < 2 * PROMPT_SECS
            for _ in range(5):  # meanwhile probes and the scaling signal answer promptly
                for path in ("/livez", "/api/scaling", "/livez"):
                    t0 = time.monotonic()
                    assert requests.get(base + path, timeout=5).ok
                    assert time.monotonic() - t0 < PROMPT_SECS, path
            waiting = [f for f in futures if not f.done()]
            assert len(waiting) == defaults.EVENTS_WAITERS_MAX
            appended = time.monotonic()
            task_id = town.tasks.add("wake the followers").id
            done, _ = wait(waiting, timeout=10)
            assert len(done) == len(waiting)
            for f in waiting:
                resp, at = f.result()
                body = resp.json()
                assert resp.status_code == 200 and WAIT_HEADER not in resp.headers
                assert [e["task_id"] for e in body["events"]] == [task_id]
                assert body["next_after"] == body["events"][0]["id"]
                assert at - appended < PROMPT_SECS
        town.close()


@pytest.mark.slow
def test_a_stopping_worker_ends_its_waits_within_one_slice(tmp_path, redis_url):
    with townhall(tmp_path, redis_url) as (base, proc):
        with ThreadPoolExecutor(1) as pool:
            poll = pool.submit(_timed_get, f"{base}/v1/events", after="$", wait=25)
            time.sleep(1.0)  # it waits
            assert not poll.done()
            stopped = time.monotonic()
            os.kill(proc.pid, signal.SIGTERM)
            resp, at = poll.result(timeout=SLICE_SECS + 5)
        assert resp.status_code == 200 and resp.json()["count"] == 0
        assert resp.headers[WAIT_HEADER] == "stopping" and resp.headers["Retry-After"] == "1"
        assert at - stopped < SLICE_SECS + PROMPT_SECS
        assert proc.wait(timeout=10) == 0
        log = (tmp_path / "gunicorn.log").read_text()
        assert "Traceback" not in log, log[-3000:]
