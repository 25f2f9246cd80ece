"""The first hour with `tt`, without traps (issue 13): no stray towns, short ids, one spelling
of a state, and no Python values in what a person reads — through the real console script."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tinytown.core.liveness import Beat
from tinytown.missions.start import start_mission

from .api_support import app, client  # noqa: F401 - fixtures
from .conftest import CONFIG_ENV, tt_executable

# --- 1. a directory that is not a town ------------------------------------------------------------

TOWN_COMMANDS = [
    ("status",),
    ("backlog", "list"),
    ("backlog", "add", "x"),
    ("task", "list"),
    ("task", "show", "3c9a3a52-0000-4000-8000-000000000000"),
    ("agent", "list"),
    ("mission", "list"),
    ("events",),
    ("inbox", "alice"),
    ("recover",),
    ("redis", "start"),
    ("redis", "status"),
    ("notify", "list"),
]


def run_in(cwd, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k not in CONFIG_ENV}
    full_env.update(env or {})
    return subprocess.run(
        [tt_executable(), *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def stray(tmp_path):
    """A directory with no tinytown.toml (and no town ever run in it)."""
    path = tmp_path / "stray"
    path.mkdir()
    return path


@pytest.mark.parametrize("args", TOWN_COMMANDS, ids=[" ".join(a) for a in TOWN_COMMANDS])
def test_a_directory_that_is_not_a_town_is_refused_with_exit_3_and_the_fix(stray, args):
    result = run_in(stray, *args)
    assert result.returncode == 3, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith(f"tt: error: no town here ({stray})")
    for fix in ("run `tt init` here", "--town DIR", "TINYTOWN_TOWN_DIR"):
        assert fix in lines[0]
    assert list(stray.iterdir()) == []  # no tinytown.toml, no .tt/, no Redis socket


def test_a_town_directory_named_by_option_or_environment_must_be_a_town_too(stray, tmp_path):
    by_option = run_in(tmp_path, "--town", str(stray), "task", "list")
    assert by_option.returncode == 3 and f"no town in {stray} (from --town)" in by_option.stderr
    by_env = run_in(tmp_path, "task", "list", env={"TINYTOWN_TOWN_DIR": str(stray)})
    assert by_env.returncode == 3
    assert f"no town in {stray} (from TINYTOWN_TOWN_DIR)" in by_env.stderr
    assert list(stray.iterdir()) == []


def test_init_help_and_version_need_no_town(stray):
    assert run_in(stray, "--version").returncode == 0
    assert run_in(stray, "status", "--help").returncode == 0
    assert run_in(stray, "auth", "gen-key").returncode == 0  # touches no town
    assert run_in(stray, "init").returncode == 0
    assert (stray / "tinytown.toml").is_file()
    assert run_in(stray, "notify", "list").returncode == 0  # a town now


def test_a_directory_where_a_town_ran_on_defaults_stays_usable(stray, redis_url):
    """Townhall and workers run without tinytown.toml (the README's first command); they leave
    .tt/ behind, and the coding CLI a worker runs reports back with `tt task complete` there."""
    (stray / ".tt").mkdir()
    result = run_in(stray, "backlog", "list", env={"REDIS_URL": redis_url})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Backlog is empty"


def make_mission(town):
    mission, _ = start_mission(town, items=[{"key": "plan", "title": "Plan it"}], title="m")
    return mission


# --- 3. short ids ---------------------------------------------------------------------------------

TWIN_A = "abcdef12-0000-4000-8000-00000000000a"
TWIN_B = "abcdef12-1111-4000-8000-00000000000b"


def test_a_task_is_named_by_its_first_8_hex_digits(run_tt, town):
    task = town.tasks.add("short and sweet")
    shown = run_tt("task", "show", task.id[:8], "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["id"] == task.id
    dashless = task.id.replace("-", "")[:12].upper()
    assert json.loads(run_tt("task", "show", dashless, "--json").stdout)["id"] == task.id
    done = run_tt("task", "complete", task.id[:8], "--result", "ok")
    assert done.returncode == 0 and done.stdout.strip() == f"Task {task.id} completed"
    assert town.tasks.get(task.id).state == "completed"


def test_backlog_remove_claim_and_cancel_take_short_ids(run_tt, town):
    agent = town.agents.register("claimer", "claude")
    removed, claimed, cancelled = (town.tasks.add(d) for d in ("remove", "claim", "cancel"))
    assert run_tt("backlog", "remove", removed.id[:8]).returncode == 0
    assert town.tasks.find(removed.id) is None
    result = run_tt("backlog", "claim", claimed.id[:8], agent.id[:8])
    assert result.returncode == 0, result.stderr
    assert town.tasks.get(claimed.id).assigned_to == agent.id
    assert run_tt("task", "cancel", cancelled.id[:10]).returncode == 0
    assert town.tasks.get(cancelled.id).state == "cancelled"


def test_an_ambiguous_short_id_exits_1_naming_the_candidates(run_tt, town):
    for task_id in (TWIN_A, TWIN_B):
        town.tasks.add("twin", task_id=task_id)
    result = run_tt("task", "show", "abcdef12")
    assert result.returncode == 1
    line = result.stderr.strip()
    assert "ambiguous" in line and TWIN_A in line and TWIN_B in line and "\n" not in line
    assert json.loads(run_tt("task", "show", "abcdef121", "--json").stdout)["id"] == TWIN_B


def test_an_unknown_or_too_short_id_exits_5(run_tt, town):
    town.tasks.add("alone")
    unknown = run_tt("task", "show", "0badc0de")
    assert unknown.returncode == 5 and "no task id begins with it" in unknown.stderr
    too_short = run_tt("task", "show", "abcd")
    assert too_short.returncode == 5 and "at least its first 8 hex digits" in too_short.stderr


def test_an_agent_is_named_by_its_first_8_hex_digits(run_tt, town):
    agent = town.agents.register("worker-1", "claude")
    shown = run_tt("agent", "show", agent.id[:8])
    assert shown.returncode == 0 and f"id: {agent.id}" in shown.stdout, shown.stderr
    assert run_tt("send", agent.id[:8], "hello").returncode == 0
    assert run_tt("agent", "show", "0badc0de").returncode == 5


def test_a_live_missions_status_says_when_no_worker_would_take_its_tasks(run_tt, town):
    mission = make_mission(town)
    alone = run_tt("mission", "status", mission.id)
    assert alone.returncode == 0 and "no live worker to take its tasks" in alone.stdout
    town.agents.set_state(town.agents.register("worker-1", "claude").id, "ready")  # it beats
    served = run_tt("mission", "status", mission.id)
    assert served.returncode == 0 and "no live worker" not in served.stdout


def test_an_ambiguous_agent_short_id_exits_1(run_tt, town):
    for name, agent_id in (("a1", TWIN_A), ("a2", TWIN_B)):
        town.agents.register(name, "claude", agent_id=agent_id)
    result = run_tt("agent", "kill", "abcdef12")
    assert result.returncode == 1 and TWIN_A in result.stderr and TWIN_B in result.stderr


def test_a_mission_is_named_by_its_first_8_hex_digits(run_tt, town):
    mission = make_mission(town)
    status = run_tt("mission", "status", mission.id[:8])
    assert status.returncode == 0 and status.stdout.startswith(f"Mission {mission.id}")
    events = run_tt("events", "--mission", mission.id[:8], "--json")
    assert events.returncode == 0, events.stderr
    assert {json.loads(line)["mission_id"] for line in events.stdout.splitlines()} == {mission.id}
    note = run_tt("mission", "note", mission.id[:8], "hello")
    assert note.returncode == 0 and note.stdout.strip().endswith(f"sent to mission {mission.id}")
    stopped = run_tt("mission", "stop", mission.id[:8])
    assert stopped.returncode == 0 and town.missions.get(mission.id).state == "blocked"
    assert run_tt("mission", "status", "0badc0de").returncode == 5


# --- 4. one spelling of a state ---------------------------------------------------------------------


@pytest.mark.parametrize("spelling", ["running", "Running", "RUNNING"])
def test_task_list_filters_by_state_in_any_case(run_tt, town, spelling):
    running = town.tasks.add("busy")
    town.tasks.transition(running.id, "take_shared")
    town.tasks.add("waiting")
    result = run_tt("task", "list", "--state", spelling)
    assert result.returncode == 0, result.stderr
    ids = [line.split()[0] for line in result.stdout.splitlines()[1:]]
    assert ids == [running.id]


def test_a_state_is_spelled_in_tt_text_as_the_filter_takes_it_and_in_json_as_rest(run_tt, town):
    task = town.tasks.add("spelled")
    shown = run_tt("task", "show", task.id).stdout
    assert "state: pending" in shown
    listed = run_tt("task", "list").stdout
    assert f"{task.id}  pending" in listed
    assert json.loads(run_tt("task", "show", task.id, "--json").stdout)["state"] == "Pending"
    assert run_tt("task", "list", "--state", "sleeping").returncode == 2


def test_rest_state_and_status_filters_take_any_case(client, town):  # noqa: F811
    running = town.tasks.add("busy")
    town.tasks.transition(running.id, "take_shared")
    for spelling in ("running", "Running", "RUNNING"):
        body = client.get(f"/v1/tasks?state={spelling}").get_json()
        assert [t["id"] for t in body["tasks"]] == [running.id]
    mission = make_mission(town)
    items = town.missions.work_items(mission.id)
    status = items[0]["status"]
    for spelling in (status, status.upper(), status.capitalize()):
        body = client.get(f"/v1/missions/{mission.id}/work?status={spelling}").get_json()
        assert body["count"] == 1, spelling
    bad = client.get(f"/v1/missions/{mission.id}/work?status=asleep")
    assert bad.status_code == 422 and "any case" in bad.get_json()["detail"]


# --- 5. no Python in what a person reads --------------------------------------------------------------

PYTHON_LOOKS = ("['", "{'", "True", "False", "None")


@pytest.fixture
def populated(town):
    """A town with something of everything: tasks in several states with tags, repo and push,
    agents alive, dead and stopped, messages normal and urgent, a mission."""
    alive = town.agents.register("alice", "claude", heartbeat_interval_secs=5)
    town.agents.update(alive.id, "ready", beat=Beat(5))
    dead = town.agents.register("bob", "claude", heartbeat_interval_secs=5)
    town.agents.update(dead.id, "work", beat=Beat(5, age_ms=600_000))
    gone = town.agents.register("carol", "claude")
    town.agents.set_state(gone.id, "kill")
    tagged = town.tasks.add("tagged", tags=["cli", "docs"], repo="/srv/r.git", push=False)
    pushed = town.tasks.add("pushed", tags=["x"], push=True, cli="claude")
    town.tasks.assign(pushed.id, alive.id)
    done = town.tasks.add("done")
    town.tasks.complete(done.id, "all good")
    town.inbox.send(alive.id, "look at issue 7", kind="query")
    town.inbox.send(gone.id, "left behind")  # what `tt reclaim` lists
    town.tasks.add("orphaned", agent_id=gone.id)  # what `tt reclaim --orphan-tasks` lists
    town.inbox.send(alive.id, "stop what you are doing", urgent=True, sender=dead.id)
    mission = make_mission(town)
    return {
        "alice": alive,
        "bob": dead,
        "tasks": [tagged, pushed, done],
        "mission": mission,
    }


def human_commands(populated) -> list[tuple[str, ...]]:
    tasks = [("task", "show", t.id) for t in populated["tasks"]]
    return [
        ("status",),
        ("task", "list"),
        *tasks,
        ("backlog", "list"),
        ("agent", "list"),
        ("agent", "list", "--all"),
        ("agent", "show", "alice"),
        ("agent", "show", "bob"),
        ("inbox", "alice"),
        ("mission", "list", "--all"),
        ("mission", "status", populated["mission"].id),
        ("events",),
        ("notify", "list"),
        ("redis", "status"),
        ("reclaim",),
        ("reclaim", "--orphan-tasks"),
        ("recover",),
        ("agent", "prune", "--all"),
    ]


def test_no_human_output_shows_a_python_value(run_tt, populated):
    for args in human_commands(populated):
        result = run_tt(*args)
        assert result.returncode == 0, (args, result.stderr)
        assert result.stdout.strip(), args
        for look in PYTHON_LOOKS:
            assert look not in result.stdout + result.stderr, (args, look, result.stdout)


def test_task_show_joins_lists_says_yes_or_no_and_leaves_out_what_is_unset(run_tt, populated):
    tagged, pushed, _ = populated["tasks"]
    out = run_tt("task", "show", tagged.id).stdout
    assert "tags: cli, docs" in out and "push: no" in out and "repo: /srv/r.git" in out
    assert "assigned_to" not in out and "started_at" not in out
    out = run_tt("task", "show", pushed.id).stdout
    assert "push: yes" in out
    assert f"assigned_to: {populated['alice'].id} (alice)" in out


def test_inbox_names_senders_and_lists_the_urgent_messages_it_counts(run_tt, populated):
    out = run_tt("inbox", "alice").stdout.splitlines()
    assert out[0] == "alice: 1 message(s), 1 urgent"
    assert out[1].split() == ["PRIORITY", "TYPE", "FROM", "SUMMARY"]
    assert out[2].split()[:3] == ["urgent", "task", "bob"] and "stop what you" in out[2]
    assert out[3].split()[:3] == ["normal", "query", "supervisor"] and "issue 7" in out[3]
    data = json.loads(run_tt("inbox", "alice", "--json").stdout)
    assert [(m["urgent"], m["from_name"]) for m in data["messages"]] == [
        (True, "bob"),
        (False, "supervisor"),
    ]
