"""The ``tt`` CLI through its real console script: output, files written and exit codes."""

from __future__ import annotations

import argparse
import json
import os
import tomllib
import uuid

import pytest
from argon2 import PasswordHasher

from tinytown.cli.common import config_of, guard_redis
from tinytown.cli.main import build_parser
from tinytown.config import load_config
from tinytown.connection.client import make_client
from tinytown.core.errors import RedisUnavailable

from .old_redis import closed_port


def command_parsers(parser: argparse.ArgumentParser, prefix=()):
    """Every command path of the parser with its sub-parser, e.g. (("backlog", "add"), <parser>)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*prefix, name), sub
                yield from command_parsers(sub, (*prefix, name))


PARSERS = dict(command_parsers(build_parser()))
ALL_COMMANDS = sorted(PARSERS)


@pytest.mark.parametrize("path", ALL_COMMANDS, ids=[" ".join(p) for p in ALL_COMMANDS])
def test_every_command_has_help_with_a_description_and_help_for_each_argument(run_tt, path):
    result = run_tt(*path, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: tt")
    parser = PARSERS[path]
    assert parser.description, f"tt {' '.join(path)} has no description="
    assert " ".join(parser.description.split()) in " ".join(result.stdout.split())
    positionals = [
        a
        for a in parser._actions
        if not a.option_strings and not isinstance(a, argparse._SubParsersAction)
    ]
    assert [a.dest for a in positionals if not a.help] == []


def test_top_level_help_documents_exit_codes(run_tt):
    out = run_tt("--help").stdout
    for line in (
        "0    success",
        "3    invalid configuration",
        "4    Redis unreachable",
        "5    the named task",
        "6    townhall's address is in use",
    ):
        assert line in out


def test_init_writes_a_loadable_config_with_presets_and_ignores_runtime_dir(run_tt, tmp_path):
    root = tmp_path / "proj"
    root.mkdir()
    (root / ".gitignore").write_text("node_modules/")
    result = run_tt("--town", str(root), "init", "--name", "demo", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = tomllib.loads((root / "tinytown.toml").read_text())
    assert data["name"] == "demo" and data["agent_clis"]["codex-mini"]["command"].startswith(
        "codex exec"
    )
    assert load_config(root, env={}).agent.claim_timeout_secs == 60
    assert (root / ".gitignore").read_text() == "node_modules/\n.tt/\n"
    again = run_tt("--town", str(root), "init", cwd=tmp_path)
    assert again.returncode == 1 and "already exists; use --force" in again.stderr
    assert (root / ".gitignore").read_text().count(".tt/") == 1


def test_init_uses_the_directory_name_by_default(run_tt, tmp_path):
    root = tmp_path / "web app"
    root.mkdir()
    assert run_tt("init", cwd=root).returncode == 0
    assert tomllib.loads((root / "tinytown.toml").read_text())["name"] == "web-app"


def test_backlog_add_list_remove(run_tt, town):
    added = run_tt(
        "backlog",
        "add",
        "write docs",
        "--tags",
        "docs,urgent",
        "--repo",
        "/srv/r.git",
        "--push",
        "--json",
    )
    assert added.returncode == 0, added.stderr
    task = json.loads(added.stdout)
    assert (
        task["state"] == "Pending" and task["tags"] == ["docs", "urgent"] and task["push"] is True
    )
    listed = json.loads(run_tt("backlog", "list", "--json").stdout)
    assert listed["count"] == 1 and listed["backlog"][0]["id"] == task["id"]
    text = run_tt("backlog", "list").stdout
    assert task["id"] in text and "docs,urgent" in text
    removed = run_tt("backlog", "remove", task["id"])
    assert removed.returncode == 0 and town.tasks.find(task["id"]) is None
    assert run_tt("backlog", "list").stdout.strip() == "Backlog is empty"


def test_task_show_list_and_complete(run_tt, town):
    task = town.tasks.add("ship it")
    shown = json.loads(run_tt("task", "show", task.id, "--json").stdout)
    assert shown["description"] == "ship it" and shown["state"] == "Pending"
    assert task.id in run_tt("task", "list", "--state", "pending").stdout
    done = run_tt("task", "complete", task.id, "--result", "shipped")
    assert done.returncode == 0, done.stderr
    stored = town.tasks.get(task.id)
    assert (stored.state, stored.result) == ("completed", "shipped")
    assert (
        run_tt("task", "list", "--state", "pending").stdout.strip() == "No tasks in state pending"
    )


def test_task_complete_reads_the_task_id_from_the_environment(run_tt, town):
    task = town.tasks.add("from a coding CLI")
    result = run_tt("task", "complete", "--result", "ok", env={"TINYTOWN_TASK_ID": task.id})
    assert result.returncode == 0 and town.tasks.get(task.id).state == "completed"


def test_completing_twice_fails_with_exit_1_and_keeps_the_result(run_tt, town):
    task = town.tasks.add("once")
    run_tt("task", "complete", task.id, "--result", "first")
    again = run_tt("task", "complete", task.id, "--result", "second")
    assert again.returncode == 1 and "is completed; it cannot be completed" in again.stderr
    assert town.tasks.get(task.id).result == "first"


def test_task_cancel_takes_it_off_the_backlog_with_the_reason(run_tt, town):
    task = town.tasks.add("not any more")
    result = run_tt("task", "cancel", task.id, "--reason", "superseded")
    assert result.returncode == 0, result.stderr
    stored = town.tasks.get(task.id)
    assert (stored.state, stored.result) == ("cancelled", "superseded")
    assert task.id not in run_tt("backlog", "list").stdout
    assert run_tt("task", "cancel", task.id).returncode == 1


def test_unknown_task_exits_5(run_tt):
    result = run_tt("task", "show", "3c9a3a52-0000-4000-8000-000000000000")
    assert result.returncode == 5 and "not found" in result.stderr


def test_status_summarises_the_town(run_tt, town):
    town.tasks.add("a")
    town.agents.register("w1", "claude")
    data = json.loads(run_tt("status", "--json").stdout)
    assert data["name"] == town.config.name and data["agent_count"] == 1
    assert data["tasks"]["pending"] == 1 and data["backlog"] == 1


def test_invalid_config_exits_3_naming_the_key(run_tt, town_dir):
    (town_dir / "tinytown.toml").write_text("[agent]\nmax_attempts = 0\n")
    result = run_tt("status")
    assert result.returncode == 3
    assert "agent.max_attempts = 0 is invalid; expected an integer ≥ 1" in result.stderr


def test_unreachable_redis_exits_4_with_the_password_redacted(run_tt):
    result = run_tt("status", env={"REDIS_URL": f"redis://:pa55word@127.0.0.1:{closed_port()}/0"})
    assert result.returncode == 4
    assert (
        "cannot reach Redis at redis://:****@127.0.0.1" in result.stderr
        and "pa55word" not in result.stderr
    )


def test_a_redis_error_mid_command_is_exit_4_without_the_password(tmp_path, monkeypatch):
    """redis-py's own error text goes through redaction too, whatever the password matches in it."""
    port = closed_port()
    (tmp_path / "tinytown.toml").write_text('name = "lost"\n')  # a town: tt refuses anything else
    monkeypatch.setenv(
        "REDIS_URL", f"redis://:refused@127.0.0.1:{port}/0"
    )  # as in "Connection refused"

    @guard_redis
    def command(args):
        return make_client(config_of(args)).ping()  # a real redis-py error from a real closed port

    with pytest.raises(RedisUnavailable) as err:
        command(argparse.Namespace(town=str(tmp_path)))
    assert err.value.exit_status == 4
    assert str(err.value).startswith(f"lost Redis at redis://:****@127.0.0.1:{port}/0: ")
    assert "refused" not in str(err.value)


def test_auth_gen_key_prints_a_key_that_verifies_against_its_hash(run_tt):
    result = run_tt("auth", "gen-key")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    key = lines[lines.index("API Key (store securely, shown only once):") + 1]
    phc = lines[lines.index("API Key Hash (add to tinytown.toml):") + 1]
    assert len(key) == 64 and all(c in "0123456789abcdef" for c in key)
    assert phc.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert PasswordHasher().verify(phc, key)
    assert f'api_key_hash = "{phc}"' in result.stdout


def test_bad_arguments_exit_2(run_tt):
    assert run_tt("backlog").returncode == 2
    assert run_tt("task", "list", "--state", "sleeping").returncode == 2
    assert run_tt("agent").returncode == 2


# --- arguments follow the input rules (tinytown.core.inputs): exit 2, one line ------------------------

NOT_UTF8 = os.fsdecode(b"\xff")  # what Python makes of an argv byte that is not UTF-8


def one_line_usage_error(result, *phrases):
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for phrase in phrases:
        assert phrase in lines[0], lines[0]


def test_a_description_that_is_not_utf8_is_a_one_line_usage_error(run_tt, town):
    result = run_tt("backlog", "add", NOT_UTF8)
    one_line_usage_error(
        result, "tt backlog add: error: argument description", "not valid UTF-8 (byte 0xFF"
    )
    assert town.tasks.counts()["pending"] == 0


def test_a_message_that_is_not_utf8_is_a_one_line_usage_error(run_tt, town):
    town.agents.register("alpha", "claude")
    result = run_tt("send", "alpha", f"x{NOT_UTF8}y")
    one_line_usage_error(result, "argument message", "byte 0xFF at character 1")
    assert town.redis.llen(town.keys.inbox(town.agents.resolve("alpha").id)) == 0


@pytest.mark.parametrize(
    "args,phrase",
    [
        (("backlog", "add", "x", "--cli", "id -un; true"), "a name is 1-64 characters"),
        (("backlog", "add", "x", "--repo", "ext::sh -c id"), "git transport forms"),
        (("backlog", "add", "x", "--base-branch=--orphan"), "git branch name"),
        (("backlog", "add", "bell\x07"), "control character"),
        (("send", "bad name", "hi"), "a name is 1-64 characters"),
        (("backlog", "add", "   "), "must not be empty"),
        (("task", "list", "--limit", "0"), "from 1 to 1000, got '0'"),
        (("task", "list", "--limit", "-1"), "from 1 to 1000"),
        (("task", "list", "--limit", "99999999999999999999"), "from 1 to 1000"),
        (("backlog", "list", "--offset", "-5"), "from 0 to"),
        (("backlog", "list", "--offset", "999999999999999999999"), "from 0 to"),
        (("notify", "status", "--limit", "99999999999999999999"), "from 1 to 1000"),
        (("notify", "listen", "--port", "70000"), "from 0 to 65535"),
        (("notify", "listen", "--count", "0"), "from 1 to"),
        (("init", "--name", "bad name", "--force"), "is not a town name"),
        (("init", "--cli", "nosuch", "--force"), "is not a preset"),
        (("mission", "start", "--doc", "/nonexistent/doc.md"), "is not a file"),
        (("mission", "start", "--doc", ""), "is not a file"),
    ],
)
def test_arguments_that_break_their_rule_are_one_line_usage_errors(run_tt, town, args, phrase):
    one_line_usage_error(run_tt(*args), phrase)
    assert town.tasks.counts()["pending"] == 0


def test_a_cli_the_town_does_not_configure_is_refused_naming_the_ones_it_does(run_tt, town):
    result = run_tt("backlog", "add", "x", "--cli", "nosuchcli")
    one_line_usage_error(
        result, "'nosuchcli' is not a coding CLI of this town", "claude", "never a command"
    )
    assert town.tasks.counts()["pending"] == 0


def test_inbox_prints_a_stored_message_that_is_not_valid_text(run_tt, town):
    """A message stored before townhall refused lone surrogates is shown, not a traceback."""
    agent = town.agents.register("alpha", "claude")
    town.redis.rpush(
        town.keys.inbox(agent.id),
        json.dumps({"id": "m1", "type": "task", "description": "x\ud800y"}),
    )
    for args in (("inbox", "alpha"), ("inbox", "alpha", "--json")):
        result = run_tt(*args)
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
        assert "m1" in result.stdout or "x" in result.stdout


def test_a_message_without_text_is_refused_unless_it_is_a_shutdown(run_tt, town):
    alpha = town.agents.register("alpha", "claude")
    one_line_usage_error(run_tt("send", "alpha", ""), "needs its text")
    assert town.redis.llen(town.keys.inbox(alpha.id)) == 0
    assert run_tt("send", "alpha", "--kind", "shutdown").returncode == 0


@pytest.mark.parametrize(
    ("name", "content", "phrase"),
    [
        ("items.json", b"\xff\xfe[]", "not UTF-8 text"),
        ("items.TOML", b'[[items]]\nkey = "a"\ntitle = "A"\n', None),  # any case
        ("items.yaml", b"- a\n", "as .toml or .json, not '.yaml'"),
        ("items.json", b'{"items": "notalist"}', "whose 'items' is one"),
        ("items.json", b"[" * 100_000, "not valid JSON"),
    ],
)
def test_an_items_file_is_read_by_its_suffix_in_any_case_or_refused_in_one_line(
    run_tt, town, tmp_path, name, content, phrase
):
    path = tmp_path / name
    path.write_bytes(content)
    result = run_tt("mission", "start", "--file", str(path))
    if phrase is None:
        assert result.returncode == 0, result.stderr
        return
    one_line_usage_error(result, phrase)
    assert town.missions.list()[1] == 0


def test_the_cli_in_the_environment_works_beside_the_files_default_cli(run_tt, town):
    """tt init writes default_cli; TINYTOWN_AGENT_CLI made every command exit 3."""
    result = run_tt("task", "list", env={"TINYTOWN_AGENT_CLI": "codex"})
    assert result.returncode == 0, result.stderr


def test_init_that_fails_half_way_puts_the_old_config_back(run_tt, tmp_path):
    """A .gitignore that is a directory: the write fails after tinytown.toml was written."""
    town = tmp_path / "half"
    town.mkdir()
    (town / ".gitignore").mkdir()
    (town / "tinytown.toml").write_text('name = "before"\n')
    result = run_tt("--town", str(town), "init", "--force")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "nothing was changed" in result.stderr
    assert (town / "tinytown.toml").read_text() == 'name = "before"\n'
    assert not (town / "gunicorn.conf.py").exists()


def test_dispatching_a_mission_that_is_not_there_exits_5(run_tt, town):
    for ref in ("zz", str(uuid.uuid4())):
        result = run_tt("mission", "dispatch", "--mission", ref, "--once")
        assert result.returncode == 5 and "not found" in result.stderr, result.stderr


def test_a_missing_argument_is_exit_2_and_no_town_is_exit_3(run_tt, town, tmp_path):
    """Missing arguments (as argparse's own errors), and a key added where there is no town."""
    assert run_tt("task", "complete").returncode == 2
    assert run_tt("notify", "retry").returncode == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    added = run_tt("--town", str(empty), "auth", "add-key", "ci")
    assert added.returncode == 3 and "run `tt init`" in added.stderr


def test_task_list_names_the_agent_as_tt_agent_list_does(run_tt, town):
    alpha = town.agents.register("alpha", "claude")
    mine = town.tasks.add("assigned")
    town.tasks.assign(mine.id, alpha.id)
    gone = town.tasks.add("its agent was pruned")
    town.tasks.assign(gone.id, "0badc0de-0000-4000-8000-000000000000")
    rows = {
        line.split()[0]: line.split()[2] for line in run_tt("task", "list").stdout.splitlines()[1:]
    }
    assert rows[mine.id] == "alpha" and rows[gone.id] == "0badc0de"


def test_a_tinytown_toml_that_is_a_directory_is_named_so(run_tt, tmp_path):
    odd = tmp_path / "odd"
    (odd / "tinytown.toml").mkdir(parents=True)
    result = run_tt("--town", str(odd), "status")
    assert result.returncode == 3 and "not a file" in result.stderr, result.stderr


def test_mission_list_pages_with_limit_and_offset_and_counts_them_all(run_tt, town):
    """It showed the newest 100 and said nothing of the rest."""
    from tinytown.missions.start import start_mission

    made = [
        start_mission(town, items=[{"key": "a", "title": "A"}], title=f"m{i}")[0] for i in range(3)
    ]
    listed = run_tt("mission", "list", "--limit", "2", "--json")
    assert listed.returncode == 0, listed.stderr
    body = json.loads(listed.stdout)
    assert body["count"] == 3 and [m["id"] for m in body["missions"]] == [made[2].id, made[1].id]
    rest = json.loads(run_tt("mission", "list", "--limit", "2", "--offset", "2", "--json").stdout)
    assert [m["id"] for m in rest["missions"]] == [made[0].id]
    text = run_tt("mission", "list", "--limit", "1")
    assert text.returncode == 0 and text.stdout.splitlines()[-1] == "(1 of 3 shown)"
    assert run_tt("mission", "list", "--limit", "0").returncode == 2
