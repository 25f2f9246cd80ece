"""What each kind of target is sent: exact headers and body, the webhook's signature, the one-line
text, which targets want an event, the backoff, and URLs as they may be logged. Pure: no I/O."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from tinytown.config.notify import NotifyTarget
from tinytown.core import events as ev
from tinytown.notify.message import Notification, idempotency_key, link_for, text
from tinytown.notify.policy import backoff_secs, wanted_by
from tinytown.notify.targets import build_request, redact, slack_escaped

MISSION = "1a2b3c4d-0000-4000-8000-000000000001"
EVENT = {
    "id": "1700000000000-0",
    "event_type": "mission_state_changed",
    "mission_id": MISSION,
    "old_state": "running",
    "new_state": "completed",
    "message": f"mission {MISSION} completed (4/4 items)",
    "timestamp": "2026-01-02T03:04:05+00:00",
    "items_done": 4,
    "items_total": 4,
}
KEY = idempotency_key("demo", EVENT["id"], "hook")
NOTE = Notification(KEY, ev.NOTIFY_MISSION_COMPLETED, "demo", EVENT, sent_at=1_767_000_000)


def webhook(secret: str | None = None) -> NotifyTarget:
    return NotifyTarget("hook", "webhook", "https://hooks.example/in?token=t0k3n", secret=secret)


def test_the_idempotency_key_names_town_event_and_target():
    assert KEY == "demo:1700000000000-0:hook"
    assert idempotency_key("demo", EVENT["id"], "phone") != KEY


def test_a_webhook_gets_the_event_as_json_with_the_key():
    url, headers, body = build_request(webhook(), NOTE)
    assert url == "https://hooks.example/in?token=t0k3n"
    assert headers == {
        "Content-Type": "application/json",
        "Idempotency-Key": KEY,
        "User-Agent": "tinytown-notify",
    }
    assert json.loads(body) == {
        "id": KEY,
        "kind": "mission_completed",
        "town": "demo",
        "event": EVENT,
        "text": "Mission 1a2b3c4d completed (4 items)",
        "url": None,  # no [townhall] public_url: nothing to link to
    }


def test_a_webhook_with_a_secret_is_signed_over_the_raw_body():
    _, headers, body = build_request(webhook("hunter2"), NOTE)
    assert headers["X-Tinytown-Timestamp"] == "1767000000"
    expected = "sha256=" + hmac.new(b"hunter2", body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Tinytown-Signature"], expected)
    forged = "sha256=" + hmac.new(b"other", body, hashlib.sha256).hexdigest()
    assert not hmac.compare_digest(headers["X-Tinytown-Signature"], forged)
    assert "hunter2" not in json.dumps(headers) and b"hunter2" not in body


def test_ntfy_gets_the_text_with_title_priority_and_tags():
    target = NotifyTarget("phone", "ntfy", "https://ntfy.sh/secret-topic", tags=("robot",))
    url, headers, body = build_request(target, NOTE)
    assert url == "https://ntfy.sh/secret-topic"
    assert body == b"Mission 1a2b3c4d completed (4 items)"
    assert headers == {
        "Content-Type": "text/plain; charset=utf-8",
        "Title": "demo: mission completed",
        "Priority": "3",
        "Tags": "robot,white_check_mark",
        "Idempotency-Key": KEY,
        "User-Agent": "tinytown-notify",
    }


def test_ntfy_priority_is_the_targets_else_high_for_trouble():
    help_note = Notification(KEY, ev.NOTIFY_MISSION_HELP, "demo", EVENT)
    plain = NotifyTarget("p", "ntfy", "https://ntfy.sh/t")
    assert build_request(plain, help_note)[1]["Priority"] == "4"
    urgent = NotifyTarget("p", "ntfy", "https://ntfy.sh/t", priority=5)
    assert build_request(urgent, NOTE)[1]["Priority"] == "5"


def test_slack_gets_a_text_message_and_the_key_it_does_not_dedupe_on():
    target = NotifyTarget("team", "slack", "https://hooks.slack.com/services/T/B/x")
    url, headers, body = build_request(target, NOTE)
    assert url == "https://hooks.slack.com/services/T/B/x"
    assert headers == {
        "Content-Type": "application/json",
        "Idempotency-Key": KEY,
        "User-Agent": "tinytown-notify",
    }
    assert json.loads(body) == {
        "text": "[demo] Mission 1a2b3c4d completed (4 items)",
        "unfurl_links": False,
        "unfurl_media": False,
    }


BASE = "https://town.example.com/tt"
TASK = "5e6f7a8b-0000-4000-8000-000000000002"


@pytest.mark.parametrize(
    ("kind", "doc", "link"),
    [
        (ev.NOTIFY_MISSION_COMPLETED, EVENT, f"{BASE}/missions/{MISSION}"),
        (ev.NOTIFY_MISSION_FAILED, {"mission_id": MISSION}, f"{BASE}/missions/{MISSION}"),
        (ev.NOTIFY_MISSION_HELP, {"mission_id": MISSION}, f"{BASE}/missions/{MISSION}"),
        (ev.NOTIFY_TASK_FAILED, {"task_id": TASK, "mission_id": MISSION}, f"{BASE}/tasks/{TASK}"),
        (ev.NOTIFY_WORKER_UNHEALTHY, {"agent_id": TASK}, f"{BASE}/"),
        ("notification_test", {"message": "hello"}, f"{BASE}/"),
        # an id that is not one is never put in a link: the town's page instead
        (ev.NOTIFY_MISSION_HELP, {"mission_id": "../../v1/keys"}, f"{BASE}/"),
        (ev.NOTIFY_TASK_FAILED, {"task_id": "x?y=<b>"}, f"{BASE}/"),
    ],
)
def test_each_ping_links_to_the_page_that_shows_more(kind, doc, link):
    assert link_for(BASE, kind, doc) == link
    assert link_for(None, kind, doc) == ""  # no public_url: no link


def test_with_a_public_url_every_target_carries_the_link():
    link = f"{BASE}/missions/{MISSION}"
    note = Notification(KEY, ev.NOTIFY_MISSION_COMPLETED, "demo", EVENT, 1_767_000_000, link)
    assert json.loads(build_request(webhook(), note)[2])["url"] == link
    ntfy = NotifyTarget("phone", "ntfy", "https://ntfy.sh/secret-topic")
    assert build_request(ntfy, note)[1]["Click"] == link
    assert "Click" not in build_request(ntfy, NOTE)[1]
    slack = NotifyTarget("team", "slack", "https://hooks.slack.com/services/T/B/x")
    assert json.loads(build_request(slack, note)[2])["text"] == (
        f"[demo] Mission 1a2b3c4d completed (4 items) <{link}|Open>"
    )


def test_slack_shows_a_tasks_words_and_never_reads_them_as_markup():
    """A failing CLI's last line reaches the ping: it must not mention @channel or make a link."""
    hostile = {
        "task_id": TASK,
        "reason": "exit 1 | <!channel> see <https://evil.example|docs> & go",
    }
    note = Notification(KEY, ev.NOTIFY_TASK_FAILED, "demo", hostile)
    slack = NotifyTarget("team", "slack", "https://hooks.slack.com/services/T/B/x")
    sent = json.loads(build_request(slack, note)[2])["text"]
    assert "<" not in sent and ">" not in sent
    assert "&lt;!channel&gt;" in sent and "&amp; go" in sent
    assert slack_escaped("a<b>&c") == "a&lt;b&gt;&amp;c"


@pytest.mark.parametrize(
    ("kind", "doc", "line"),
    [
        (
            ev.NOTIFY_MISSION_FAILED,
            {"mission_id": MISSION, "reason": "CI is red\nlong log…"},
            "Mission 1a2b3c4d failed: CI is red",
        ),
        (
            ev.NOTIFY_MISSION_HELP,
            {"mission_id": MISSION, "reason": "which branch?"},
            "Mission 1a2b3c4d needs help: which branch?",
        ),
        (  # the deliverer adds the mission's title; a long one is cut
            ev.NOTIFY_MISSION_COMPLETED,
            {
                "mission_id": MISSION,
                "mission_title": "Fix the login bug\nand more",
                "items_done": 1,
                "items_total": 1,
            },
            'Mission 1a2b3c4d "Fix the login bug" completed (1 item)',
        ),
        (
            ev.NOTIFY_MISSION_HELP,
            {"mission_id": MISSION, "mission_title": "x" * 80, "reason": "stuck"},
            f'Mission 1a2b3c4d "{"x" * 59}…" needs help: stuck',
        ),
        (
            ev.NOTIFY_TASK_FAILED,
            {"task_id": "9f8e7d6c-1111", "attempt": 3, "reason": "exit 2\ntraceback"},
            "Task 9f8e7d6c failed after 3 attempts: exit 2",
        ),
        (  # the worker's wording: the count said once, then the CLI's last line
            ev.NOTIFY_TASK_FAILED,
            {
                "task_id": "9f8e7d6c-1111",
                "attempt": 2,
                "reason": "failed after 2 attempts (max_attempts = 2); last attempt: the coding "
                "CLI exited with code 1 | error: 3 tests failed",
            },
            "Task 9f8e7d6c failed after 2 attempts: the coding CLI exited with code 1 | "
            "error: 3 tests failed",
        ),
        (  # recovery's wording
            ev.NOTIFY_TASK_FAILED,
            {
                "task_id": "9f8e7d6c-1111",
                "attempt": 3,
                "reason": "failed after 3 attempts (max_attempts = 3); the last one ended when "
                "worker w1 stopped without finishing it",
            },
            "Task 9f8e7d6c failed after 3 attempts: the last one ended when worker w1 stopped "
            "without finishing it",
        ),
        (
            ev.NOTIFY_TASK_FAILED,
            {"task_id": "9f8e7d6c-1111", "message": "task 9f8e… running -> failed"},
            "Task 9f8e7d6c failed",
        ),
        (
            ev.NOTIFY_MISSION_FAILED,
            {"mission_id": MISSION, "items_done": 3, "items_total": 4, "message": "stuck"},
            "Mission 1a2b3c4d failed (3/4 items)",
        ),
        (
            ev.NOTIFY_MISSION_COMPLETED,
            {"mission_id": MISSION, "message": "mission … completed"},
            "Mission 1a2b3c4d completed",
        ),
        (
            ev.NOTIFY_WORKER_UNHEALTHY,
            {"agent_id": "a1", "message": "Worker alice unhealthy on outpost vm1: no heartbeat"},
            "Worker alice unhealthy on outpost vm1: no heartbeat",
        ),
        (
            ev.NOTIFY_WORKER_UNHEALTHY,
            {"agent_id": "5e6f7a8b-2222", "reason": "no heartbeat"},
            "Worker 5e6f7a8b unhealthy: no heartbeat",
        ),
    ],
)
def test_the_text_is_one_line_per_kind(kind, doc, line):
    assert text(kind, doc) == line


def test_the_text_is_bounded_and_has_no_control_characters():
    line = text(ev.NOTIFY_MISSION_HELP, {"mission_id": MISSION, "reason": "x\x07" + "y" * 500})
    assert len(line) == 300 and line.endswith("…") and "\x07" not in line


def test_targets_want_their_kinds_and_missions():
    every = NotifyTarget("every", "webhook", "https://a.example/")
    failures = NotifyTarget("failures", "webhook", "https://a.example/", events=("task_failed",))
    one = NotifyTarget("one", "webhook", "https://a.example/", missions=(MISSION,))
    targets = [every, failures, one]
    assert wanted_by(targets, "mission_completed", EVENT) == [every, one]
    assert wanted_by(targets, "task_failed", {"mission_id": "other"}) == [every, failures]
    assert wanted_by(targets, "worker_unhealthy", {"agent_id": "a"}) == [every]


def test_the_backoff_doubles_from_the_base_up_to_the_cap():
    assert [backoff_secs(n, 2, 300) for n in (1, 2, 3, 8, 9, 1000)] == [2, 4, 8, 256, 300, 300]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://ntfy.sh/secret-topic", "https://ntfy.sh/…"),
        ("https://hooks.slack.com/services/T0/B0/XyZ", "https://hooks.slack.com/…"),
        ("http://user:pw@127.0.0.1:8080/hook?token=abc", "http://127.0.0.1:8080/…"),
        ("https://[::1]:9000/x", "https://[::1]:9000/…"),
        ("https://example.com", "https://example.com/…"),
    ],
)
def test_redact_keeps_only_scheme_host_and_port(url, shown):
    assert redact(url) == shown


def test_tt_notify_listen_prints_the_text_and_the_link():
    from tinytown.notify.receiver import describe

    link = f"{BASE}/missions/{MISSION}"
    note = Notification(KEY, ev.NOTIFY_MISSION_COMPLETED, "demo", EVENT, link=link)
    assert describe(build_request(webhook(), note)[2]) == (
        f"Mission 1a2b3c4d completed (4 items) {link}"
    )
    assert describe(build_request(webhook(), NOTE)[2]) == "Mission 1a2b3c4d completed (4 items)"
    assert describe(b"plain words\n") == "plain words"
