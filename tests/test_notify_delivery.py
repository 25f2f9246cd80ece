"""Notifications delivered once: events appended to a real town's feed reach a real HTTP receiver,
each once with its Idempotency-Key; failures retry with backoff and end in the dead letters;
a deliverer killed between sending and recording is followed by a second send with the same key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tinytown.config import load_config
from tinytown.core import events as ev
from tinytown.core.clock import now, to_rfc3339
from tinytown.missions.start import start_mission
from tinytown.notify.deliver import DeliveryPolicy, Notifier
from tinytown.notify.message import idempotency_key
from tinytown.store import Town
from tinytown.store.outbox import DELIVERY_GROUP, Outbox

from .conftest import free_port, write_town
from .secrets_seen import remember
from .townhall_support import Townhall

MISSION = "1a2b3c4d-0000-4000-8000-000000000001"
OTHER_MISSION = "9e9e9e9e-0000-4000-8000-000000000002"
TASK = "5f5f5f5f-0000-4000-8000-000000000003"
AGENT = "7a7a7a7a-0000-4000-8000-000000000004"
FAST = DeliveryPolicy(
    backoff_base_secs=0.05,
    backoff_max_secs=0.2,
    claim_idle_secs=0,  # the floor still applies: twice the targets' timeout and a second
    router_claim_idle_secs=1,
    scan_interval_secs=0.1,
    block_ms=100,
)
DEADLINE_SECS = 30  # a bound for a test that fails, not a speed claim


class Receiver:
    """A real HTTP server on 127.0.0.1 that records every request and answers ``statuses`` in
    order, then 200; ``on_request(path)`` runs after recording and before answering."""

    def __init__(self, statuses=()):
        self.requests: list[dict] = []
        self.statuses = list(statuses)
        self.on_request = None
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    receiver.requests.append(
                        {
                            "method": self.command,
                            "path": self.path,
                            "headers": dict(self.headers),
                            "body": body,
                        }
                    )
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                if receiver.on_request:
                    receiver.on_request(self.path)
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_port}{path}"

    def at(self, path: str) -> list[dict]:
        with self.lock:
            return [r for r in self.requests if r["path"] == path]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def notify_town(root: Path, redis_url: str, tables: str) -> Town:
    write_town(root, redis_url, tables=tables)
    return Town.connect(load_config(root, env={}))


def target(name: str, url: str, extra: str = "") -> str:
    return (
        f'[[notify]]\nname = "{name}"\nkind = "webhook"\nurl = "{url}"\ntimeout_secs = 1\n{extra}\n'
    )


def append(town: Town, event_type: str, message: str, **fields) -> str:
    return town.events.append(ev.event(event_type, message, to_rfc3339(now()), **fields))


def mission_completed(town: Town, mission_id: str = MISSION) -> str:
    return append(
        town,
        ev.MISSION_STATE_CHANGED,
        f"mission {mission_id} completed (4/4 items)",
        mission_id=mission_id,
        old_state="running",
        new_state="completed",
        items_done=4,
        items_total=4,
    )


def task_failed(town: Town, mission_id: str | None = None) -> str:
    return append(
        town,
        ev.TASK_FAILED,
        "exit 2",
        task_id=TASK,
        mission_id=mission_id,
        new_state="failed",
        attempt=3,
        reason="exit 2",
    )


def until(condition, notifier: Notifier | None = None) -> None:
    """Run passes (or just wait) until ``condition()`` holds; fail past the deadline."""
    deadline = time.monotonic() + DEADLINE_SECS
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        if notifier is not None:
            notifier.run_once(50)
        else:
            time.sleep(0.05)


def settle(notifier: Notifier, secs: float = 0.5) -> None:
    """Keep running passes a little, so a duplicate would have time to show."""
    end = time.monotonic() + secs
    while time.monotonic() < end:
        notifier.run_once(20)


def attempts(town: Town, mission_id: str | None = None) -> list[dict]:
    docs = town.events.read(limit=1000, mission_id=mission_id)
    return [d for d in docs if d["event_type"] == ev.NOTIFICATION_ATTEMPT]


def test_each_notification_reaches_the_receiver_once_with_its_key_and_signed_body(
    tmp_path, redis_url, receiver
):
    secret = remember(f"hook-secret-{os.urandom(8).hex()}")
    town = notify_town(
        tmp_path, redis_url, target("hook", receiver.url("/hook"), f'secret = "{secret}"')
    )
    notifier = Notifier(town, FAST)
    notifier.prepare()
    ids = {
        "mission": mission_completed(town),
        "task": task_failed(town),
        "agent": append(
            town,
            ev.AGENT_UNHEALTHY,
            "Worker alice unhealthy on outpost local: no heartbeat",
            agent_id=AGENT,
            reason="no heartbeat",
        ),
    }
    append(town, ev.TASK_CREATED, "created", task_id=TASK)  # not a notification
    until(lambda: len(receiver.requests) >= 3, notifier)
    settle(notifier)

    got = receiver.at("/hook")
    assert len(got) == 3
    keys = [r["headers"]["Idempotency-Key"] for r in got]
    assert sorted(keys) == sorted(
        idempotency_key(town.config.name, i, "hook") for i in ids.values()
    )
    for request in got:
        assert request["method"] == "POST"
        body = json.loads(request["body"])
        assert body["id"] == request["headers"]["Idempotency-Key"]
        signed = "sha256=" + hmac.new(secret.encode(), request["body"], hashlib.sha256).hexdigest()
        assert hmac.compare_digest(request["headers"]["X-Tinytown-Signature"], signed)
    bodies = {json.loads(r["body"])["kind"]: json.loads(r["body"]) for r in got}
    assert bodies["mission_completed"]["text"] == "Mission 1a2b3c4d completed (4 items)"
    assert bodies["mission_completed"]["event"]["id"] == ids["mission"]
    assert bodies["mission_completed"]["town"] == town.config.name
    assert bodies["task_failed"]["text"] == "Task 5f5f5f5f failed after 3 attempts: exit 2"
    assert bodies["worker_unhealthy"]["text"] == (
        "Worker alice unhealthy on outpost local: no heartbeat"
    )
    delivered = [a for a in attempts(town) if a["status"] == "delivered"]
    assert sorted((a["target"], a["attempt"]) for a in delivered) == [("hook", 1)] * 3


def test_targets_hear_only_the_kinds_and_missions_they_filter_on(tmp_path, redis_url, receiver):
    tables = target("failures", receiver.url("/failures"), 'events = ["task_failed"]')
    tables += target("mission", receiver.url("/mission"), f'missions = ["{MISSION}"]')
    town = notify_town(tmp_path, redis_url, tables)
    notifier = Notifier(town, FAST)
    notifier.prepare()
    failed_id = task_failed(town)
    mine = mission_completed(town)
    mission_completed(town, OTHER_MISSION)
    until(lambda: len(receiver.requests) >= 2, notifier)
    settle(notifier)

    assert [json.loads(r["body"])["event"]["id"] for r in receiver.at("/failures")] == [failed_id]
    assert [json.loads(r["body"])["event"]["id"] for r in receiver.at("/mission")] == [mine]
    assert len(receiver.requests) == 2


def test_a_receiver_failing_twice_gets_it_on_the_third_attempt(tmp_path, redis_url):
    receiver = Receiver(statuses=[500, 500])
    try:
        town = notify_town(tmp_path, redis_url, target("hook", receiver.url("/hook")))
        notifier = Notifier(town, FAST)
        notifier.prepare()
        event_id = mission_completed(town)
        until(lambda: any(a["status"] == "delivered" for a in attempts(town)), notifier)
        settle(notifier)
    finally:
        receiver.close()

    key = idempotency_key(town.config.name, event_id, "hook")
    assert [r["headers"]["Idempotency-Key"] for r in receiver.requests] == [key] * 3
    in_mission = attempts(town, MISSION)
    assert [(a["status"], a["attempt"], a.get("reason")) for a in in_mission] == [
        ("failed", 1, "HTTP 500"),
        ("failed", 2, "HTTP 500"),
        ("delivered", 3, "HTTP 200"),
    ]
    assert {a["target"] for a in in_mission} == {"hook"}
    assert all(a["mission_id"] == MISSION for a in in_mission)


def test_a_receiver_down_past_the_attempt_limit_ends_in_the_dead_letters(tmp_path, redis_url):
    down = f"http://127.0.0.1:{free_port()}/hook?token=t0k3n"
    town = notify_town(tmp_path, redis_url, target("hook", down))
    notifier = Notifier(town, DeliveryPolicy(**{**asdict(FAST), "max_attempts": 3}))
    notifier.prepare()
    event_id = task_failed(town, MISSION)
    until(lambda: any(a["status"] == "dead" for a in attempts(town)), notifier)
    settle(notifier)

    statuses = [(a["status"], a["attempt"]) for a in attempts(town, MISSION)]
    assert statuses == [("failed", 1), ("failed", 2), ("dead", 3)]
    (dead,) = Outbox.of(town).dead_letters()
    assert dead["key"] == idempotency_key(town.config.name, event_id, "hook")
    assert (dead["target"], dead["attempts"]) == ("hook", "3")
    assert dead["reason"] == "connection failed (ConnectionError)"
    assert Outbox.of(town).pending(10) == []
    feed = json.dumps(town.events.read(limit=1000))
    assert "t0k3n" not in feed and str(down) not in feed


def test_a_deliverer_killed_before_recording_is_followed_by_one_resend_with_the_same_key(
    tmp_path, redis_url, receiver
):
    town = notify_town(tmp_path, redis_url, target("hook", receiver.url("/hook")))
    Notifier(town, FAST).prepare()
    event_id = mission_completed(town)
    env = {**os.environ, "TT_TEST_NOTIFY_POLICY": json.dumps(asdict(FAST))}
    script = Path(__file__).with_name("notify_deliverer.py")
    process = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path)], env=env, stdout=subprocess.PIPE, text=True
    )
    killed = threading.Event()

    def kill_it(path):  # the request has arrived: the deliverer dies before it hears the answer
        if not killed.is_set():
            os.kill(process.pid, signal.SIGKILL)
            killed.set()

    receiver.on_request = kill_it
    try:
        assert process.stdout.readline().strip() == "ready"
        until(killed.is_set)
        assert process.wait(timeout=DEADLINE_SECS) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
        process.stdout.close()
    assert attempts(town) == []  # it died before recording anything

    successor = Notifier(town, FAST)
    until(lambda: any(a["status"] == "delivered" for a in attempts(town)), successor)
    settle(successor, 1.0)

    key = idempotency_key(town.config.name, event_id, "hook")
    assert [r["headers"]["Idempotency-Key"] for r in receiver.requests] == [key, key]
    recorded = [(a["status"], a["attempt"]) for a in attempts(town)]
    assert recorded == [("delivered", 2)]
    assert {r["headers"]["Idempotency-Key"] for r in receiver.requests} == {key}


def test_the_threads_deliver_and_stop(tmp_path, redis_url, receiver):
    town = notify_town(tmp_path, redis_url, target("hook", receiver.url("/hook")))
    notifier = Notifier(town, FAST)
    notifier.prepare()
    notifier.start()
    try:
        mission_completed(town)
        until(lambda: len(receiver.requests) == 1)
    finally:
        notifier.stop(timeout_secs=DEADLINE_SECS)
    assert not any(t.is_alive() for t in notifier.threads)
    assert len(notifier.threads) == 2


def test_a_town_without_targets_starts_no_thread(town):
    notifier = Notifier(town).start()
    assert notifier.threads == []
    notifier.stop()


def test_redis_errors_are_logged_once_and_the_threads_keep_trying(tmp_path, redis_url, caplog):
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    config = load_config(
        write_town(tmp_path, redis_url, tables=target("hook", "http://x/")), env={}
    )
    unreachable = redis.Redis(
        unix_socket_path=str(tmp_path / "no-such.sock"), retry=Retry(NoBackoff(), 0)
    )
    policy = DeliveryPolicy(**{**asdict(FAST), "error_retry_secs": 0.05})
    notifier = Notifier(Town(config, unreachable), policy)
    with caplog.at_level("WARNING", logger="tinytown.townhall"):
        notifier.start()
        time.sleep(1.0)  # many retries' worth
        alive = [t.is_alive() for t in notifier.threads]
        notifier.stop(timeout_secs=DEADLINE_SECS)
    assert alive == [True, True]
    errors = [r.getMessage() for r in caplog.records if "notify_redis_error" in r.getMessage()]
    assert sorted(m.split()[1] for m in errors) == ["thread=deliverer", "thread=router"]


def test_an_entry_whose_target_was_removed_goes_to_the_dead_letters(tmp_path, redis_url):
    town = notify_town(tmp_path, redis_url, target("gone", "http://127.0.0.1:9/x"))
    before = Notifier(town, FAST)
    before.prepare()
    mission_completed(town)
    assert before.route(0) == 1  # routed to the outbox, not yet sent
    Notifier(town, FAST, targets=()).run_once(0)
    (dead,) = Outbox.of(town).dead_letters()
    assert (dead["target"], dead["reason"]) == ("gone", "the target is no longer configured")
    assert [(a["status"], a["target"]) for a in attempts(town)] == [("dead", "gone")]


def test_a_stopped_notifier_leaves_both_consumer_groups(tmp_path, redis_url, receiver):
    town = notify_town(tmp_path, redis_url, target("hook", receiver.url("/hook")))
    notifier = Notifier(town, FAST)
    notifier.prepare()
    mission_completed(town)
    until(lambda: len(receiver.requests) == 1, notifier)

    def consumers():
        return {
            c["name"]
            for stream, group in (
                (town.keys.events, "notify"),
                (Outbox.of(town).outbox, "deliverers"),
            )
            for c in town.redis.xinfo_consumers(stream, group)
        }

    assert notifier.consumer in consumers()
    notifier.stop()
    assert notifier.consumer not in consumers()


def test_a_graceful_stop_of_townhall_finishes_the_notification_it_is_sending(
    tmp_path, redis_url, receiver
):
    # A plain SIGTERM to gunicorn while a ping was on its way used to cut the send off: the
    # receiver got it, the outbox never heard, and a minute later another townhall sent it again.
    port = free_port()
    town = notify_town(
        tmp_path,
        redis_url,
        f"[townhall]\nrest_port = {port}\nworkers = 1\n\n" + target("slow", receiver.url("/slow")),
    )
    hall = Townhall(tmp_path, port)
    try:
        hall.wait_serving()
        until(lambda: "event=notify_started" in hall.output)

        def stop_then_answer(path):  # the stop arrives while the request is in flight
            os.kill(hall.proc.pid, signal.SIGTERM)
            time.sleep(0.5)

        receiver.on_request = stop_then_answer
        task_failed(town)
        assert hall.proc.wait(timeout=DEADLINE_SECS) == 0
    finally:
        hall.stop()

    assert len(receiver.at("/slow")) == 1
    assert town.redis.xpending(Outbox.of(town).outbox, DELIVERY_GROUP)["pending"] == 0
    assert [a["status"] for a in attempts(town)] == ["delivered"]


def test_a_ping_names_its_mission_and_a_help_ping_for_an_ended_mission_is_not_sent(
    tmp_path, redis_url, receiver
):
    # A help ping parked while its target was down once reached the phone after the mission had
    # ended; pings named a mission by 8 hex digits only.
    town = notify_town(tmp_path, redis_url, target("hook", receiver.url("/hook")))
    notifier = Notifier(town, FAST)
    notifier.prepare()
    done, _ = start_mission(town, items=[{"key": "a", "title": "A"}], title="Fix the login bug")
    ended, _ = start_mission(town, items=[{"key": "b", "title": "B"}], title="Old work")
    mission_completed(town, done.id)
    town.missions.stop(ended.id, force=True)  # failed (a ping of its own): it needs nobody now
    append(town, ev.MISSION_HELP_NEEDED, "help", mission_id=ended.id, reason="stuck")

    until(lambda: len(attempts(town)) >= 3, notifier)
    settle(notifier)

    texts = [json.loads(r["body"])["text"] for r in receiver.at("/hook")]
    assert len(texts) == 2
    assert any(t.startswith(f'Mission {done.id[:8]} "Fix the login bug" completed') for t in texts)
    assert any(t.startswith(f'Mission {ended.id[:8]} "Old work" failed') for t in texts)
    skipped = [a for a in attempts(town) if a["status"] == "skipped"]
    assert [(a["mission_id"], a["reason"]) for a in skipped] == [
        (ended.id, "the mission is failed now")
    ]
    assert town.redis.xpending(Outbox.of(town).outbox, DELIVERY_GROUP)["pending"] == 0


def test_with_a_public_url_each_ping_links_to_its_page(tmp_path, redis_url, receiver):
    """A webhook's body names the page (``url``), an ntfy ping opens it when tapped (``Click``)."""
    phone = target("phone", receiver.url("/phone")).replace('kind = "webhook"', 'kind = "ntfy"')
    town = notify_town(
        tmp_path,
        redis_url,
        '[townhall]\npublic_url = "https://town.example.com/tt/"\n'
        + target("hook", receiver.url("/hook"))
        + phone,
    )
    notifier = Notifier(town, FAST)
    notifier.prepare()
    mission_completed(town)
    task_failed(town)
    until(lambda: len(receiver.requests) >= 4, notifier)
    settle(notifier)

    pages = {
        "mission_completed": f"https://town.example.com/tt/missions/{MISSION}",
        "task_failed": f"https://town.example.com/tt/tasks/{TASK}",
    }
    hooks = [json.loads(r["body"]) for r in receiver.at("/hook")]
    assert {b["kind"]: b["url"] for b in hooks} == pages
    clicks = sorted(r["headers"]["Click"] for r in receiver.at("/phone"))
    assert clicks == sorted(pages.values())
