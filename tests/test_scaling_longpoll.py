"""``GET /api/scaling?wait=&since=``: a real townhall (gunicorn, its event pump running) answers
the moment the signal changes, woken by the event that queued the work — and a quiet wait costs
Redis nothing, which ``INFO commandstats`` shows."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time

import pytest
import requests

from tinytown.config import load_config
from tinytown.connection.embedded import EmbeddedServer
from tinytown.store import Town

from .conftest import free_port, write_town
from .scaler_stack import SCALER
from .townhall_support import Townhall
from .worker_support import poll


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory):
    """A Redis of this module's own, so that its command counts are this townhall's alone."""
    root = tmp_path_factory.mktemp("longpoll-redis")
    (root / "tinytown.toml").write_text('name = "longpoll-redis"\n')
    server = EmbeddedServer(load_config(root, env={}))
    server.ensure_running()
    yield server.target.url
    server.stop()


@pytest.fixture(scope="module")
def served(tmp_path_factory, own_redis):
    root = write_town(tmp_path_factory.mktemp("longpoll"), own_redis)
    port = free_port()
    with open(root / "tinytown.toml", "a") as toml:
        toml.write(f"\n[townhall]\nrest_port = {port}\nworkers = 1\n")
    townhall = Townhall(root, port)
    town = Town.connect(load_config(root, env={}))
    try:
        townhall.wait_serving()
        yield townhall.url, town
    finally:
        townhall.stop()
        town.redis.close()


def scaling(url: str, **params) -> tuple[requests.Response, float]:
    began = time.monotonic()
    resp = requests.get(f"{url}/api/scaling", params=params, timeout=40)
    return resp, time.monotonic() - began


def test_the_signal_carries_a_version_that_changes_with_its_counts(served):
    url, town = served
    first = scaling(url)[0].json()
    assert len(first["version"]) == 16 and first["version"].isalnum()
    assert scaling(url)[0].json()["version"] == first["version"]  # nothing changed
    for _ in range(20):  # a read right after a write sees it, every time
        task = town.tasks.add("a version bump")
        try:
            after = scaling(url)[0].json()
            assert after["version"] != first["version"]
            assert after["pending_tasks"] == first["pending_tasks"] + 1
        finally:
            town.tasks.cancel(task.id, "test done")
        assert scaling(url)[0].json()["version"] == first["version"]


def test_a_wait_ends_the_moment_work_is_queued(served):
    url, town = served
    version = scaling(url)[0].json()["version"]
    queued: list[float] = []

    def queue_later():
        time.sleep(1.0)
        queued.append(time.monotonic())
        queued.append(town.tasks.add("wake the scaler").id)

    thread = threading.Thread(target=queue_later)
    thread.start()
    resp, _ = scaling(url, wait=20, since=version)
    answered = time.monotonic()
    thread.join()
    try:
        body = resp.json()
        assert resp.status_code == 200 and body["version"] != version
        assert body["pending_tasks"] >= 1
        # woken by the task's own event, not by a timer: well within one pump block (55 s)
        # or one long-poll slice (5 s)
        assert answered - queued[0] < 2.0, answered - queued[0]
    finally:
        town.tasks.cancel(queued[1], "test done")


def test_a_quiet_wait_answers_the_same_signal_when_it_ends(served):
    url, _ = served
    version = scaling(url)[0].json()["version"]
    resp, took = scaling(url, wait=2, since=version)
    assert resp.status_code == 200 and resp.json()["version"] == version
    assert 1.8 <= took < 6, took


def test_a_stale_version_is_answered_at_once(served):
    url, _ = served
    resp, took = scaling(url, wait=20, since="0000000000000000")
    assert resp.status_code == 200 and resp.json()["version"] != "0000000000000000"
    assert took < 2, took


def test_without_since_there_is_nothing_to_wait_for(served):
    url, _ = served
    resp, took = scaling(url, wait=20)
    assert resp.status_code == 200 and took < 2, took


@pytest.mark.parametrize("wait", ["-1", "26", "x", "1.5"])
def test_a_bad_wait_is_refused_naming_it(served, wait):
    url, _ = served
    resp = requests.get(f"{url}/api/scaling", params={"wait": wait, "since": "a"}, timeout=10)
    assert resp.status_code == 422 and resp.json()["field"] == "wait"


def test_waiting_costs_redis_nothing(served):
    """A 4 s long-poll of an unchanged signal sends no command: the process answers from its
    kept signal, its pump's one blocking read holding. A plain read sends one: the feed's newest
    event id, to be sure no write is missing from the kept signal."""
    url, town = served
    version = scaling(url)[0].json()["version"]
    before = commands(town)
    scaling(url, wait=4, since=version)
    sent = commands(town) - before
    assert sent <= 3, sent  # INFO itself, and at most a pump read ending its block
    before = commands(town)
    for _ in range(20):
        assert scaling(url)[0].json()["version"] == version
    sent = commands(town) - before
    # one XREVRANGE a read (a full read is ten or more); INFO, a pump read, a duty's look
    assert 20 <= sent <= 40, sent


def test_an_answer_at_once_counts_a_write_its_pump_has_not_delivered(town):
    """The kept signal lags a write until the process's pump delivers the write's event; an
    answer given at once (``confirm``) does not: it sees the feed hold an event the pump has
    not delivered and reads the signal afresh."""
    from tinytown.api.signals import SignalCache
    from tinytown.store.pump import EventPump

    pump = EventPump(town, block_secs=1).start()
    cache = SignalCache(town, pump)
    try:
        poll(lambda: pump.caught_up()[1], timeout=10, message="the pump to read the feed")
        with pump.cond:  # the pump may read the add's event but cannot deliver it meanwhile
            kept = cache.current()[0]
            task = town.tasks.add("a write the pump has not delivered")
            assert cache.current()[0]["version"] == kept["version"]  # the kept signal lags
            fresh = cache.current(confirm=True)[0]
            assert fresh["pending_tasks"] == kept["pending_tasks"] + 1
        poll(lambda: pump.caught_up()[1], timeout=10, message="the pump to deliver the add")
        assert cache.current()[0]["version"] == fresh["version"]
        town.tasks.cancel(task.id, "test done")
    finally:
        pump.stop()


def commands(town: Town) -> int:
    stats = town.redis.info("commandstats")
    return sum(v["calls"] for v in stats.values())


def test_an_app_without_its_pump_answers_at_once_and_says_so(town_dir):
    from tinytown.api import create_app

    app = create_app(load_config(town_dir, env={}))
    client = app.test_client()
    version = client.get("/api/scaling").get_json()["version"]
    resp = client.get(f"/api/scaling?wait=5&since={version}")
    assert resp.status_code == 200 and resp.headers["X-Tinytown-Wait"] == "unsupported"


# -- the scaler's loop waits on it ------------------------------------------------------------


def scaler_loop(url: str, *extra: str) -> subprocess.Popen:
    """``python scaler.py run --json`` against ``url``, with an unreachable Docker engine (a
    pass then stops at Docker, after reading the signal: enough to see when passes happen)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TINYTOWN_SCALER_")}
    env["DOCKER_HOST"] = "unix:///nonexistent/docker.sock"
    return subprocess.Popen(
        [sys.executable, str(SCALER), "run", "--json", "--url", url, "--interval-secs", "60",
         "--image", "tinytown-agent-worker:none", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )  # fmt: skip


def next_pass(loop: subprocess.Popen, timeout: float) -> tuple[dict | None, float]:
    """The loop's next JSON line and how long it took (None if none within ``timeout``)."""
    began = time.monotonic()
    ready, _, _ = select.select([loop.stdout], [], [], timeout)
    if not ready:
        return None, time.monotonic() - began
    return json.loads(loop.stdout.readline()), time.monotonic() - began


def test_the_scaler_passes_the_moment_work_is_queued_not_a_minute_later(served, tmp_path):
    url, town = served
    loop = scaler_loop(url, "--state-file", str(tmp_path / "state.json"))
    try:
        first, _ = next_pass(loop, 20)
        assert first is not None and first["signal"]["version"]
        time.sleep(0.5)  # the loop is in its long-poll now
        task = town.tasks.add("scale me")
        try:
            woke, took = next_pass(loop, 10)
            assert woke is not None, "no pass within 10 s of the task (interval is 60 s)"
            assert took < 3, took
            assert woke["signal"]["pending_tasks"] >= 1
        finally:
            town.tasks.cancel(task.id, "test done")
        began = time.monotonic()
        loop.send_signal(signal.SIGTERM)  # during its next long-poll: it stops at once
        assert loop.wait(timeout=10) == 0
        assert time.monotonic() - began < 5
    finally:
        if loop.poll() is None:
            loop.kill()
            loop.wait()


def test_a_townhall_without_versions_is_polled_instead(served):
    from tinytown.scaler.model import Config
    from tinytown.scaler.reconcile import Scaler
    from tinytown.scaler.report import Report
    from tinytown.scaler.wire import parse_signal

    url, _ = served
    body = requests.get(f"{url}/api/scaling", timeout=10).json()
    scaler = Scaler(Config(url=url), {})
    report = Report(signal=parse_signal({k: v for k, v in body.items() if k != "version"}))
    assert scaler.wait_for_change(report, 20) is None  # no version: the loop sleeps instead
    report = Report(signal=parse_signal(body))
    began = time.monotonic()
    assert scaler.wait_for_change(report, 1).version == body["version"]  # waited, unchanged
    assert time.monotonic() - began >= 0.9
