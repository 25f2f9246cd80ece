"""Missions end to end on real Redis and real worker processes running the stand-in CLI: the
dispatcher queues each work item the moment its dependencies are done, a failing item fails the
mission after its attempts, and a rejecting review leads to a fix, then approval."""

from __future__ import annotations

import time

import pytest

from tinytown.config import load_config
from tinytown.core import events as ev
from tinytown.core.clock import parse_rfc3339
from tinytown.core.inputs import InputError
from tinytown.missions.dispatcher import Dispatcher
from tinytown.missions.start import start_mission
from tinytown.store import Town

from .worker_support import poll, worker_town, workers  # noqa: F401  (fixtures)

CHAIN_AND_BRANCH = [
    {"key": "design", "title": "Design it [print use one queue]", "kind": "design"},
    {"key": "build", "title": "Build it", "depends_on": ["design"]},
    {"key": "test", "title": "Test it", "kind": "test", "depends_on": ["build"]},
    {"key": "docs", "title": "Write the docs", "depends_on": ["design"]},
]


@pytest.fixture
def dispatched(worker_town):
    """A town for real workers, with a dispatcher thread (as townhall runs one)."""
    towns, dispatchers = [], []

    def make(tick_secs=1, **agent):
        root = worker_town(**agent)
        town = Town.connect(load_config(root, env={}))
        dispatcher = Dispatcher(town, tick_secs=tick_secs, lease_secs=tick_secs + 2).start()
        towns.append(town)
        dispatchers.append(dispatcher)
        return root, town

    yield make
    for d in dispatchers:
        d.stop()
        d.thread.join(timeout=10)
    for t in towns:
        t.close()


def wait_mission(town, mission_id, state, timeout=60.0):
    return poll(
        lambda: town.missions.get(mission_id).state == state,
        timeout=timeout,
        message=f"mission {mission_id} to be {state}: {town.missions.work_items(mission_id)}",
    )


def event_types(town, mission_id):
    return [e["event_type"] for e in town.events.read(mission_id=mission_id, limit=1000)]


def test_a_mission_of_four_items_completes_on_two_workers_in_dependency_order(dispatched, workers):
    root, town = dispatched()
    mission, warnings = start_mission(
        town, items=CHAIN_AND_BRANCH, policy={"max_parallel_items": 2}, title="four items"
    )
    assert warnings == [] and mission.state == "running"
    workers.start(root, name="one")
    workers.start(root, name="two")
    wait_mission(town, mission.id, "completed")

    items = {i["key"]: i for i in town.missions.work_items(mission.id)}
    assert {i["status"] for i in items.values()} == {"done"}
    tasks = {k: town.tasks.get(i["task_id"]) for k, i in items.items()}
    assert all(t.state == "completed" and t.mission_id == mission.id for t in tasks.values())
    # each item's task started only after the tasks of its dependencies completed
    for key, deps in (("build", ["design"]), ("test", ["build"]), ("docs", ["design"])):
        for dep in deps:
            done, began = tasks[dep].completed_at, tasks[key].started_at
            assert parse_rfc3339(done) <= parse_rfc3339(began), (dep, key)
    assert f"mission:{mission.id}" in tasks["build"].tags
    # the dependent item's prompt carries what its dependency reported
    assert "which this item depends on:\nuse one queue" in tasks["build"].description
    assert not town.redis.sismember(town.keys.missions_active, mission.id)
    types = event_types(town, mission.id)
    assert types.count(ev.MISSION_WORK_COMPLETED) == 4 and types.count(ev.TASK_COMPLETED) == 4
    assert types[-1] == ev.MISSION_STATE_CHANGED
    summary = town.missions.summary(mission.id)
    assert summary["done"] == 4 and summary["progress"] == 1.0


def test_a_failing_item_fails_the_mission_after_its_attempts(dispatched, workers):
    root, town = dispatched()
    mission, _ = start_mission(
        town,
        items=[
            {"key": "ok", "title": "Fine"},
            {"key": "bad", "title": "Breaks [exit 3]", "depends_on": ["ok"]},
            {"key": "after", "title": "Never runs", "depends_on": ["bad"]},
        ],
        policy={"max_attempts": 2},
    )
    workers.start(root)
    wait_mission(town, mission.id, "failed")
    items = {i["key"]: i for i in town.missions.work_items(mission.id)}
    assert items["ok"]["status"] == "done" and items["after"]["status"] == "pending"
    bad = items["bad"]
    assert bad["status"] == "failed" and "after 2 attempts" in bad["reason"]
    assert town.tasks.get(bad["task_id"]).attempts == 2  # the item's policy, not the worker's 3
    doc = town.missions.get(mission.id).data
    assert doc["blocked_reason"].startswith("work item bad failed")
    assert not town.redis.sismember(town.keys.missions_active, mission.id)


def test_a_rejecting_review_leads_to_a_fix_task_then_approval(dispatched, workers, tmp_path):
    verdicts = tmp_path / "verdicts"
    verdicts.write_text("changes requested: add a test for the empty case\napproved\n")
    root, town = dispatched()
    mission, _ = start_mission(
        town,
        items=[{"key": "feature", "title": f"Add the feature [verdicts {verdicts}]"}],
        policy={"reviewer_required": True},
    )
    workers.start(root)
    wait_mission(town, mission.id, "completed")
    (item,) = town.missions.work_items(mission.id)
    assert item["status"] == "done" and item["reviewer_approved"] is True
    assert item["round"] == 2
    stages = [
        t.tags[1]
        for t in (town.tasks.get(i) for i in town.tasks.ids_in_state("completed"))
        if t.mission_id == mission.id
    ]
    assert sorted(stages) == sorted(
        ["mission-task:work", "mission-task:review", "mission-task:fix", "mission-task:review"]
    )
    fix = next(
        town.tasks.get(i)
        for i in town.tasks.ids_in_state("completed")
        if "mission-fix-task" in town.tasks.get(i).tags
    )
    assert "changes requested: add a test for the empty case" in fix.description
    assert event_types(town, mission.id).count(ev.MISSION_WORK_BLOCKED) == 3


def test_a_dependency_cycle_and_unknown_dependencies_are_refused_naming_them(town):
    items = [
        {"key": "a", "title": "A", "depends_on": ["c"]},
        {"key": "b", "title": "B", "depends_on": ["a"]},
        {"key": "c", "title": "C", "depends_on": ["b"]},
    ]
    with pytest.raises(InputError) as err:
        start_mission(town, items=items)
    assert "cycle" in str(err.value) and "a → c → b → a" in str(err.value)
    with pytest.raises(InputError) as err:
        start_mission(town, items=[{"key": "a", "title": "A", "depends_on": ["zzz"]}])
    assert err.value.field == "items[0].depends_on" and "zzz" in str(err.value)
    assert town.redis.zcard(town.keys.missions) == 0


def test_a_finished_task_queues_its_dependent_item_at_once(dispatched, workers):
    """Event-driven hand-off: with a 60 s backstop tick, the whole mission runs in seconds, each
    dependent task on the docket within a fraction of a second (bench/ measures the time)."""
    root, town = dispatched(tick_secs=60)
    mission, _ = start_mission(
        town,
        items=[
            {"key": "first", "title": "First"},
            {"key": "second", "title": "Second", "depends_on": ["first"]},
        ],
    )
    workers.start(root)
    wait_mission(town, mission.id, "completed", timeout=30)
    items = {i["key"]: i for i in town.missions.work_items(mission.id)}
    first = town.tasks.get(items["first"]["task_id"])
    second = town.tasks.get(items["second"]["task_id"])
    gap = (parse_rfc3339(second.created_at) - parse_rfc3339(first.completed_at)).total_seconds()
    assert 0 <= gap < 0.9, gap


def test_a_stopped_mission_queues_nothing_until_resumed(dispatched, workers):
    root, town = dispatched()
    mission, _ = start_mission(town, items=[{"key": "only", "title": "Only"}])
    town.missions.stop(mission.id)
    time.sleep(1.5)  # more than a tick: the dispatcher must leave it alone
    (item,) = town.missions.work_items(mission.id)
    assert item["status"] == "pending" and item["task_id"] is None
    town.missions.resume(mission.id)
    workers.start(root)
    wait_mission(town, mission.id, "completed")


def test_notes_pause_resume_and_retry_a_failed_mission(dispatched, workers, tmp_path):
    fixed = tmp_path / "fixed"  # the second item fails until this exists
    root, town = dispatched()
    mission, _ = start_mission(
        town,
        items=[
            {"key": "first", "title": "First"},
            {"key": "second", "title": f"Second [fail-until {fixed}]", "depends_on": ["first"]},
        ],
        policy={"max_attempts": 1},
    )
    town.missions.add_note(mission.id, "conductor", "pause, please")
    poll(lambda: town.missions.get(mission.id).state == "blocked", message="the pause note")
    assert town.missions.get(mission.id).data["blocked_reason"].startswith("Paused by conductor")
    workers.start(root)
    # the first item's task may have been queued before the note: it runs; nothing more is
    poll(
        lambda: (
            {i["key"]: i["status"] for i in town.missions.work_items(mission.id)}["first"]
            in ("done", "pending")
        ),
        message="the first item to settle",
    )
    time.sleep(1.5)  # more than a tick
    second = {i["key"]: i for i in town.missions.work_items(mission.id)}["second"]
    assert second["status"] in ("pending", "ready") and second["task_id"] is None

    town.missions.add_note(mission.id, "conductor", "resume")
    wait_mission(town, mission.id, "failed")  # the second item fails on its only attempt
    fixed.write_text("")
    town.missions.add_note(mission.id, "conductor", "retry")
    wait_mission(town, mission.id, "completed")  # the item's new task, and it passes now
    notes = town.missions.log_lines(mission.id)
    assert any("resumed (1 failed item(s) retried)" in line for line in notes)
    types = event_types(town, mission.id)
    assert ev.MISSION_WORK_REQUEUED in types and types.count(ev.MISSION_EVENT) >= 3


def test_a_mission_with_no_live_worker_asks_for_help(dispatched):
    """No worker for help_after_secs (the shortest allowed, 10 s): mission_help_needed, once."""
    root, town = dispatched()
    mission, _ = start_mission(
        town, items=[{"key": "only", "title": "Only"}], policy={"help_after_secs": 10}
    )
    poll(
        lambda: ev.MISSION_HELP_NEEDED in event_types(town, mission.id),
        timeout=20,
        message="mission_help_needed",
    )
    time.sleep(2)  # two more ticks: the same reason is not repeated within its backoff
    helps = [
        e
        for e in town.events.read(mission_id=mission.id, limit=1000)
        if e["event_type"] == ev.MISSION_HELP_NEEDED
    ]
    assert len(helps) == 1 and "no worker is live" in helps[0]["reason"]
    doc = town.missions.get(mission.id).data
    assert doc["dispatcher_last_help_request_reason"] == helps[0]["reason"]
    assert doc["state"] == "running"
