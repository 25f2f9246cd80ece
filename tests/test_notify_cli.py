"""``tt notify list|test``, through argparse and the command functions themselves (the group is
registered in ``tt`` by tinytown/cli/main.py)."""

from __future__ import annotations

import json

import pytest

from tinytown.cli import notify as notify_cli
from tinytown.cli.common import Parser
from tinytown.core.errors import NotFound, TinytownError

from .conftest import free_port
from .test_notify_delivery import Receiver


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
