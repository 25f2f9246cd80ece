"""``tt notify list|test``, through argparse and the command functions themselves (the group is
registered in ``tt`` by tinytown/cli/main.py)."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest

from tinytown.cli import notify as notify_cli
from tinytown.cli.common import Parser
from tinytown.core.errors import NotFound, TinytownError
from tinytown.notify.deliver import DeliveryPolicy, Notifier
from tinytown.store.outbox import Outbox

from .conftest import free_port
from .test_notify_delivery import (
    FAST,
    Receiver,
    attempts,
    notify_town,
    settle,
    target,
    task_failed,
    until,
)


def tt_notify(town_dir, *argv: str) -> int:
    parser = Parser(prog="tt")
    parser.add_argument("-t", "--town")
    notify_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["--town", str(town_dir), "notify", *argv])
    return args.func(args)


def write(tmp_path, tables: str):
    (tmp_path / "tinytown.toml").write_text(f'name = "cli"\n{tables}')
    return tmp_path


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def test_list_shows_names_kinds_redacted_urls_and_filters(tmp_path, capsys):
    town_dir = write(
        tmp_path,
        '[[notify]]\nname = "phone"\nkind = "ntfy"\nurl = "https://ntfy.sh/s3cret-topic"\n'
        '[[notify]]\nname = "ci"\nurl = "https://hooks.example/x?token=t0k3n"\n'
        'events = ["task_failed"]\nsecret = "hunter2"\n',
    )
    assert tt_notify(town_dir, "list") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["NAME", "KIND", "URL", "EVENTS", "MISSIONS"]
    assert out[1].split() == ["phone", "ntfy", "https://ntfy.sh/…", "all", "all"]
    assert out[2].split() == ["ci", "webhook", "https://hooks.example/…", "task_failed", "all"]
    assert tt_notify(town_dir, "list", "--json") == 0
    listed = json.loads(capsys.readouterr().out)
    assert [t["signed"] for t in listed["targets"]] == [False, True]
    assert "s3cret" not in json.dumps(listed) and "t0k3n" not in json.dumps(listed)


def test_list_without_targets_says_how_to_add_one(tmp_path, capsys):
    assert tt_notify(write(tmp_path, ""), "list") == 0
    assert "add [[notify]] tables" in capsys.readouterr().out


def test_test_sends_a_test_notification_and_prints_the_status(tmp_path, capsys, receiver):
    town_dir = write(
        tmp_path, f'[[notify]]\nname = "hook"\nurl = "{receiver.url("/in")}"\nsecret = "s"\n'
    )
    assert tt_notify(town_dir, "test", "hook") == 0
    assert capsys.readouterr().out == "sent to hook (HTTP 200)\n"
    (request,) = receiver.requests
    body = json.loads(request["body"])
    assert body["kind"] == "test" and body["town"] == "cli"
    assert body["text"] == "Test notification from `tt notify test`: this target works."
    assert request["headers"]["Idempotency-Key"] == body["id"]
    assert request["headers"]["X-Tinytown-Signature"].startswith("sha256=")


def test_test_fails_with_exit_1_naming_the_error_but_not_the_url(tmp_path, capsys):
    url = f"http://127.0.0.1:{free_port()}/in?token=t0k3n"
    town_dir = write(tmp_path, f'[[notify]]\nname = "down"\nurl = "{url}"\ntimeout_secs = 1\n')
    assert tt_notify(town_dir, "test") == 1
    err = capsys.readouterr().err
    assert err.startswith("failed to send to down at http://127.0.0.1:")
    assert err.rstrip().endswith("/…: connection failed (ConnectionError)")
    assert "t0k3n" not in err


def test_test_with_an_unknown_name_or_no_targets_is_an_error(tmp_path):
    town_dir = write(tmp_path, '[[notify]]\nname = "a"\nurl = "https://x.example/"\n')
    with pytest.raises(NotFound, match="no \\[\\[notify\\]\\] target named 'b'; configured: a"):
        tt_notify(town_dir, "test", "b")
    with pytest.raises(TinytownError, match="no \\[\\[notify\\]\\] targets in tinytown.toml"):
        tt_notify(write(tmp_path, ""), "test")


def test_status_shows_dead_letters_and_retry_sends_them_again(tmp_path, redis_url, capsys):
    # The dead letters were only visible through redis-cli (on a socket the docs did not name)
    # and went nowhere after a re-send.
    failing = Receiver(statuses=[500, 500])
    try:
        town = notify_town(tmp_path, redis_url, target("hook", failing.url("/hook")))
        notifier = Notifier(town, DeliveryPolicy(**{**asdict(FAST), "max_attempts": 2}))
        notifier.prepare()
        task_failed(town)
        until(lambda: Outbox.of(town).dead_count() == 1, notifier)

        assert tt_notify(tmp_path, "status") == 0
        out = capsys.readouterr().out
        assert out.startswith("Waiting: 0   Dead letters: 1")
        assert "hook" in out and "task_failed" in out and "HTTP 500" in out
        assert tt_notify(tmp_path, "status", "--json") == 0
        (dead,) = json.loads(capsys.readouterr().out)["dead_letters"]

        with pytest.raises(NotFound, match="no dead letter with id 1-1"):
            tt_notify(tmp_path, "retry", "1-1", dead["id"])
        with pytest.raises(TinytownError, match="ids or --all"):
            tt_notify(tmp_path, "retry")
        assert Outbox.of(town).dead_count() == 1  # nothing moved

        assert tt_notify(tmp_path, "retry", dead["id"], dead["id"]) == 0  # (named twice: sent once)
        assert "1 dead letter(s) back in the outbox" in capsys.readouterr().out
        until(lambda: len(failing.at("/hook")) == 3, notifier)  # two 500s, then this one: 200
        settle(notifier)
        assert [a["status"] for a in attempts(town)][-1] == "delivered"
        assert Outbox.of(town).dead_count() == 0 and Outbox.of(town).pending(10) == []
    finally:
        failing.close()
