"""Missions through the product's own doors: townhall on a real gunicorn (its dispatcher runs in
each worker process), ``tt mission start`` and a ``tt mission dispatch`` that is SIGKILLed
mid-mission and replaced; real workers with the stand-in CLI do the work."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest
import requests

from tinytown.config import load_config
from tinytown.store import Town

from .conftest import CONFIG_ENV, tt_executable
from .scaler_stack import TownhallProcess
from .worker_support import poll, worker_town, workers  # noqa: F401  (fixtures)

FOUR_ITEMS = [
    {"key": "design", "title": "Design", "kind": "design"},
    {"key": "build", "title": "Build", "depends_on": ["design"]},
    {"key": "test", "title": "Test", "kind": "test", "depends_on": ["build"]},
    {"key": "docs", "title": "Docs", "depends_on": ["design"]},
]
ITEMS_TOML = """\
title = "from a file"
[policy]
max_parallel_items = 2

[[items]]
key = "one"
title = "First"

[[items]]
key = "two"
title = "Second"
depends_on = ["one"]
"""


@pytest.fixture
def townhalls(tmp_path):
    started = []

    def start(root):
        th = TownhallProcess(root, tmp_path / f"townhall-{len(started)}.log").start()
        started.append(th)
        return th

    yield start
    for th in started:
        th.stop()


def run_tt(root, *args, timeout=60):
    env = {k: v for k, v in os.environ.items() if k not in CONFIG_ENV}
    return subprocess.run(
        [tt_executable(), "--town", str(root), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def wait_done(town, mission_id, timeout=60.0):
    return poll(
        lambda: town.missions.get(mission_id).terminal,
        timeout=timeout,
        message=f"mission {mission_id} to end: {town.missions.work_items(mission_id)}",
    )


def test_missions_started_over_rest_and_with_tt_complete_on_two_workers(
    worker_town, workers, townhalls
):
    root = worker_town()
    th = townhalls(root)
    town = Town.connect(load_config(root, env={}))
    workers.start(root, name="one")
    workers.start(root, name="two")

    resp = requests.post(
        th.url + "/v1/missions", json={"title": "over REST", "items": FOUR_ITEMS}, timeout=10
    )
    assert resp.status_code == 201, resp.text
    rest_id = resp.json()["mission_id"]
    assert resp.json()["work_items"] == 4

    (root / "items.toml").write_text(ITEMS_TOML)
    started = run_tt(root, "mission", "start", "--file", str(root / "items.toml"))
    assert started.returncode == 0, started.stderr
    tt_id = started.stdout.split()[1]

    for mission_id, total in ((rest_id, 4), (tt_id, 2)):
        wait_done(town, mission_id)
        shown = requests.get(f"{th.url}/v1/missions/{mission_id}", timeout=10).json()
        assert shown["mission"]["state"] == "completed", shown
        assert shown["summary"]["done"] == total and shown["summary"]["progress"] == 1.0
    status = run_tt(root, "mission", "status", tt_id)
    assert status.returncode == 0 and "completed" in status.stdout and "2/2 done" in status.stdout
    listed = requests.get(th.url + "/v1/missions", timeout=10).json()
    assert {m["id"]: m["summary"]["done"] for m in listed["missions"]} == {rest_id: 4, tt_id: 2}
    events = requests.get(f"{th.url}/v1/missions/{rest_id}/events?limit=1000", timeout=10).json()
    assert events["events"][-1]["new_state"] == "completed"
    ready = requests.get(th.url + "/ready", timeout=10).json()
    assert ready["dispatcher"] == "idle"  # no mission left active: nothing is stalled
    town.close()


def test_rest_refuses_a_dependency_cycle_naming_it_and_stores_nothing(worker_town, townhalls):
    root = worker_town()
    th = townhalls(root)
    items = [
        {"key": "a", "title": "A", "depends_on": ["b"]},
        {"key": "b", "title": "B", "depends_on": ["a"]},
    ]
    resp = requests.post(th.url + "/v1/missions", json={"items": items}, timeout=10)
    assert resp.status_code == 422
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    assert "cycle: a → b → a" in resp.json()["detail"] and resp.json()["field"] == "items"
    assert requests.get(th.url + "/v1/missions", timeout=10).json()["total"] == 0


def test_an_unknown_cli_in_an_item_is_named_by_its_field_over_rest_and_tt(worker_town, townhalls):
    root = worker_town()
    th = townhalls(root)
    items = [{"key": "a", "title": "A"}, {"key": "b", "title": "B", "cli": "nosuch"}]
    resp = requests.post(th.url + "/v1/missions", json={"items": items}, timeout=10)
    assert resp.status_code == 422 and resp.json()["field"] == "items[1].cli"
    assert "'nosuch' is not a coding CLI" in resp.json()["detail"]
    (root / "bad.toml").write_text(
        '[[items]]\nkey = "a"\ntitle = "A"\n\n[[items]]\nkey = "b"\ntitle = "B"\ncli = "nosuch"\n'
    )
    refused = run_tt(root, "mission", "start", "--file", str(root / "bad.toml"))
    assert refused.returncode == 2
    assert "bad.toml: field 'items[1].cli': 'nosuch' is not a coding CLI" in refused.stderr
    # (no worker runs here: a mission that starts says so)
    (root / "good.toml").write_text('[[items]]\nkey = "a"\ntitle = "A"\n')
    started = run_tt(root, "mission", "start", "--file", str(root / "good.toml"))
    assert started.returncode == 0 and "warning: no live worker to take its tasks" in started.stderr
    assert requests.get(th.url + "/v1/missions", timeout=10).json()["total"] == 1


def test_a_dispatcher_killed_mid_mission_is_replaced_and_the_mission_completes(
    worker_town, workers
):
    root = worker_town()
    with open(root / "tinytown.toml", "a") as f:
        f.write("\n[missions]\ndispatcher = false\ntick_secs = 1\nlease_secs = 3\n")
    town = Town.connect(load_config(root, env={}))
    items = [
        {"key": "one", "title": "One [sleep 0.5]"},
        {"key": "two", "title": "Two [sleep 0.5]", "depends_on": ["one"]},
        {"key": "three", "title": "Three [sleep 0.5]", "depends_on": ["two"]},
    ]
    env = {k: v for k, v in os.environ.items() if k not in CONFIG_ENV}
    command = [tt_executable(), "--town", str(root), "mission", "dispatch"]
    first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    replacement = None
    try:
        (root / "items.json").write_text(json.dumps(items))
        started = run_tt(root, "mission", "start", "--file", str(root / "items.json"))
        assert started.returncode == 0, started.stderr
        mission_id = started.stdout.split()[1]
        workers.start(root)
        poll(
            lambda: (
                {i["key"]: i["status"] for i in town.missions.work_items(mission_id)}["one"]
                == "done"
            ),
            timeout=30,
            message="the first item to be done",
        )
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        replacement = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        wait_done(town, mission_id)
        assert town.missions.get(mission_id).state == "completed"
        assert [i["status"] for i in town.missions.work_items(mission_id)] == ["done"] * 3
        # nothing ran twice: one task per item
        mine = [t for t in town.tasks.list(None, limit=100)[0] if t.mission_id == mission_id]
        assert len(mine) == 3 and all(t.attempts == 1 for t in mine)
    finally:
        for proc in (first, replacement):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        town.close()


def test_tt_mission_start_compiles_issues_through_gh_and_the_mission_runs(
    worker_town, workers, townhalls, tmp_path
):
    from .test_mission_github import FakeGh

    gh = FakeGh(tmp_path)
    gh.answer(
        {
            "acme/widgets#1": {"title": "Add the model", "body": ""},
            "acme/widgets#2": {"title": "Add the view", "body": "Depends on #1"},
        }
    )
    root = worker_town()
    townhalls(root)
    town = Town.connect(load_config(root, env={}))
    env = {k: v for k, v in os.environ.items() if k not in CONFIG_ENV}
    env["PATH"] = f"{gh.bin}{os.pathsep}{env['PATH']}"
    started = subprocess.run(
        [
            tt_executable(),
            "--town",
            str(root),
            "mission",
            "start",
            "-i",
            "acme/widgets#2",
            "-i",
            "acme/widgets#1",
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert started.returncode == 0, started.stderr
    mission_id = json.loads(started.stdout)["mission_id"]
    items = {i["key"]: i for i in town.missions.work_items(mission_id)}
    assert items["acme/widgets#2"]["title"] == "Add the view"
    assert items["acme/widgets#2"]["depends_on"] == [items["acme/widgets#1"]["id"]]
    workers.start(root)
    wait_done(town, mission_id)
    assert town.missions.get(mission_id).state == "completed"
    town.close()
