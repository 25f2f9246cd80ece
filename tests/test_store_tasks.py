"""Task records: creation writes record, indexes and docket entry; transitions keep indexes exact."""

from __future__ import annotations

import threading
from datetime import UTC

import pytest

from tinytown.core.errors import InvalidTransition, NotFound
from tinytown.core.states import TASK_STATES

from .conftest import next_message


def index_members(town, state):
    return set(town.redis.zrange(town.keys.tasks_in_state(state), 0, -1))


def assert_indexes_exact(town):
    """Every task is in exactly the index of its recorded state, and the counts add up."""
    all_ids = set(town.redis.zrange(town.keys.tasks, 0, -1))
    seen = set()
    for state in TASK_STATES:
        members = index_members(town, state)
        assert not (members & seen), f"ids in two state indexes: {members & seen}"
        seen |= members
        for tid in members:
            assert town.redis.hget(town.keys.task(tid), "state") == state
    assert seen == all_ids
    pending = set(town.redis.lrange(town.keys.backlog, 0, -1))
    assert pending == index_members(town, "pending")


def test_add_writes_record_index_backlog_and_docket_entry(town):
    task = town.tasks.add("write the parser", tags=["backend"])
    stored = town.tasks.get(task.id)
    assert stored.state == "pending" and stored.tags == ["backend"] and stored.attempts == 0
    assert town.redis.lrange(town.keys.backlog, 0, -1) == [task.id]
    entries = town.redis.xrange(town.keys.docket)
    assert [e[1]["task_id"] for e in entries] == [task.id]
    assert entries[0][1]["type"] == "task_assign"
    groups = town.redis.xinfo_groups(town.keys.docket)
    assert [g["name"] for g in groups] == ["workers"]
    assert_indexes_exact(town)


def test_add_for_an_agent_goes_to_its_own_docket_not_the_backlog(town):
    agent = town.agents.register("alice", "claude")
    task = town.tasks.add("fix the bug", agent_id=agent.id)
    assert town.tasks.get(task.id).state == "assigned"
    assert town.redis.llen(town.keys.backlog) == 0
    assert town.redis.xlen(town.keys.docket) == 0
    assert [e[1]["task_id"] for e in town.redis.xrange(town.keys.agent_docket(agent.id))] == [
        task.id
    ]
    assert_indexes_exact(town)


def test_optional_worker_fields_round_trip(town):
    task = town.tasks.add("x", repo="/srv/repo.git", base_branch="main", push=True, cli="codex")
    stored = town.tasks.get(task.id)
    assert (stored.repo, stored.base_branch, stored.push, stored.cli) == (
        "/srv/repo.git",
        "main",
        True,
        "codex",
    )


def test_claim_moves_a_backlog_task_to_the_agent_and_its_docket(town):
    agent = town.agents.register("bob", "claude")
    task = town.tasks.add("claim me")
    town.tasks.assign(task.id, agent.id)
    stored = town.tasks.get(task.id)
    assert stored.state == "assigned" and stored.assigned_to == agent.id
    assert town.redis.llen(town.keys.backlog) == 0
    assert town.redis.xlen(town.keys.agent_docket(agent.id)) == 1
    assert_indexes_exact(town)


def test_full_lifecycle_keeps_indexes_exact(town):
    tasks = [town.tasks.add(f"t{i}") for i in range(5)]
    town.tasks.transition(tasks[0].id, "take_shared")
    town.tasks.complete(tasks[0].id, "done")
    town.tasks.fail(tasks[1].id, "broke")
    town.tasks.cancel(tasks[2].id, "not needed")
    town.tasks.transition(tasks[3].id, "take_shared", incr_attempts=True)
    town.tasks.transition(tasks[3].id, "undo_claim", delete_fields=("assigned_to",))
    counts = town.tasks.counts()
    assert counts == {
        "pending": 2,
        "assigned": 0,
        "running": 0,
        "completed": 1,
        "failed": 1,
        "cancelled": 1,
    }
    assert town.tasks.get(tasks[3].id).attempts == 1
    assert town.redis.lrange(town.keys.backlog, 0, -1) == [tasks[4].id, tasks[3].id]
    assert_indexes_exact(town)


def test_completing_a_terminal_task_is_refused_and_writes_nothing(town):
    task = town.tasks.add("once")
    town.tasks.complete(task.id, "first")
    before = town.redis.hgetall(town.keys.task(task.id))
    with pytest.raises(InvalidTransition, match="is completed"):
        town.tasks.complete(task.id, "second")
    assert town.redis.hgetall(town.keys.task(task.id)) == before


def test_complete_requiring_an_assignee_refuses_another_agent(town):
    task = town.tasks.add("mine")
    a = town.agents.register("a1", "claude")
    town.tasks.assign(task.id, a.id)
    with pytest.raises(InvalidTransition, match="another agent"):
        town.tasks.complete(task.id, "x", agent_id="00000000-0000-4000-8000-000000000000")
    assert town.tasks.get(task.id).state == "assigned"


def test_unknown_task_is_not_found(town):
    with pytest.raises(NotFound):
        town.tasks.get("9f0c2f4e-0000-4000-8000-000000000000")
    with pytest.raises(NotFound):
        town.tasks.complete("9f0c2f4e-0000-4000-8000-000000000000")


def test_remove_from_backlog_deletes_record_and_every_index(town):
    task = town.tasks.add("drop me")
    town.tasks.remove_from_backlog(task.id)
    assert town.tasks.find(task.id) is None
    assert town.redis.zcard(town.keys.tasks) == 0
    assert town.redis.llen(town.keys.backlog) == 0
    assert_indexes_exact(town)


def test_remove_refuses_a_task_that_is_no_longer_pending(town):
    task = town.tasks.add("busy")
    town.tasks.transition(task.id, "take_shared")
    with pytest.raises(InvalidTransition):
        town.tasks.remove_from_backlog(task.id)
    assert town.tasks.get(task.id).state == "running"


def test_concurrent_claims_of_one_task_succeed_exactly_once(town):
    task = town.tasks.add("contested")
    outcomes = []

    def claim(n):
        outcomes.append(town.tasks.transition(task.id, "take_shared").ok)

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count(True) == 1
    assert_indexes_exact(town)


def test_list_pages_by_state_with_total(town):
    ids = [town.tasks.add(f"t{i}").id for i in range(7)]
    page, total = town.tasks.list("pending", offset=2, limit=3)
    assert total == 7 and [t.id for t in page] == ids[2:5]


def test_add_stores_the_record_field_for_field_in_one_step(town):
    task = town.tasks.add(
        "ship it", tags=["a", "b"], repo="/srv/repo.git", base_branch="main", push=True, cli="fake"
    )
    assert town.redis.hgetall(town.keys.task(task.id)) == task.to_hash()
    assert town.redis.zscore(town.keys.tasks, task.id) == town.redis.zscore(
        town.keys.tasks_in_state("pending"), task.id
    )
    assert_indexes_exact(town)


@pytest.mark.parametrize(
    "stamp",
    [
        "1970-01-01T00:00:00",
        "1999-12-31T23:59:59",
        "2000-02-29T12:00:00",
        "2024-02-29T23:59:59",
        "2026-11-23T19:00:01",
        "2100-02-28T00:00:00",
        "2100-03-01T00:00:00",
        "2400-02-29T06:07:08",
    ],
)
def test_the_lua_clock_writes_rfc3339_as_python_does(town, stamp):
    from datetime import datetime, timezone

    from tinytown.store.scripts import _NOW_FUNCTION

    when = datetime.fromisoformat(stamp).replace(microsecond=654321, tzinfo=UTC)
    secs = int(when.timestamp())
    text = town.redis.eval(
        _NOW_FUNCTION + "return rfc3339(tonumber(ARGV[1]), tonumber(ARGV[2]))", 0, secs, 654321
    )
    assert text == when.isoformat()


def test_cancelling_a_running_task_nudges_its_worker_and_only_then(town):
    agent = town.agents.register("runner", "claude")
    running = town.tasks.add("running")
    town.tasks.transition(running.id, "take_shared", set_fields={"assigned_to": agent.id})
    queued = town.tasks.add("queued", agent_id=agent.id)
    listener = town.redis.pubsub(ignore_subscribe_messages=True)
    listener.subscribe(town.keys.control(agent.id))
    try:
        town.tasks.cancel(queued.id, "not yet started: no worker to nudge")
        town.tasks.cancel(running.id, "stop it")
        assert next_message(listener) == f"cancel {running.id}"
        assert next_message(listener, timeout=0.2) is None  # nothing for the queued one
    finally:
        listener.close()


def test_a_transition_refuses_to_be_given_the_fields_it_writes_itself(town):
    task = town.tasks.add("x")
    for kwargs in (
        {"set_fields": {"state": "running"}},
        {"delete_fields": ("attempts",)},
        {"set_fields": {"updated_at": "t"}},
    ):
        with pytest.raises(ValueError, match="may not set or delete"):
            town.tasks.transition(task.id, "take_shared", **kwargs)
    assert town.tasks.get(task.id).state == "pending"
