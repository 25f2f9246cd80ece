"""Recovering work from dead agents: recover, reclaim (never discards), orphan tasks, and their tt commands."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from tinytown.config import load_config
from tinytown.core.clock import now, to_rfc3339
from tinytown.core.errors import InvalidTransition
from tinytown.core.liveness import Beat
from tinytown.recovery import orphan_tasks, reclaim, recover
from tinytown.store import Town
from tinytown.store.docket import Docket

from .conftest import write_town
from .worker_support import poll

AGENT = "[agent]\nheartbeat_interval_secs = 1\nclaim_timeout_secs = 2\nmax_attempts = 2\n"
LONG_AGO = to_rfc3339(now() - timedelta(minutes=5))


@pytest.fixture
def town_dir(tmp_path, redis_url):
    return write_town(tmp_path, redis_url, tables=AGENT)


@pytest.fixture
def town(town_dir):
    t = Town.connect(load_config(town_dir, env={}))
    yield t
    t.redis.close()


def worker(town, name, state="working"):
    """An agent that read and claimed the next entry (shared docket, or its own stream)."""
    agent = town.agents.register(name, "fake")
    town.agents.update(agent.id, {"working": "work", "idle": "ready"}[state])
    d = Docket(town, agent.id)
    d.ensure_groups()
    return agent, d


def silence(town, agent_id):
    town.agents.update(agent_id, beat=Beat(1, age_ms=300_000))


def shared_pending(town):
    return town.redis.xpending(town.keys.docket, "workers")["pending"]


# -- recover ---------------------------------------------------------------------------------------


def test_recover_stops_silent_agents_and_returns_their_task_to_the_backlog(town):
    dead, d = worker(town, "dead")
    live, _ = worker(town, "live", state="idle")
    task = town.tasks.add("half done")
    d.read(100)  # the read takes the task
    silence(town, dead.id)

    result = recover(town)

    assert result == {"checked": 2, "recovered": 1, "agents": ["dead"], "reclaimed": 1}
    assert town.agents.get(dead.id).state == "stopped"
    assert town.agents.get(live.id).state == "idle"
    back = town.tasks.get(task.id)
    assert back.state == "pending" and back.assigned_to is None and back.attempts == 1
    assert town.redis.lrange(town.keys.backlog, 0, -1) == [task.id]
    assert shared_pending(town) == 0  # old entry acknowledged, a fresh one is unread
    assert [e[1]["task_id"] for e in town.redis.xrange(town.keys.docket)] == [task.id, task.id]
    assert dead.id not in {
        c["name"] for c in town.redis.xinfo_consumers(town.keys.docket, "workers")
    }


def test_recover_puts_back_an_entry_a_dead_worker_read_but_never_took(town):
    # A worker that dies between its read and putting back what it did not take (a claim
    # refused while paused, or one entry from each stream) holds an entry whose task is still
    # pending. It once went nowhere: acknowledged, the task pending with no entry for ever.
    dead, _ = worker(town, "dead")
    task = town.tasks.add("read, never taken")
    town.redis.xreadgroup("workers", dead.id, {town.keys.docket: ">"}, count=1)
    silence(town, dead.id)

    assert recover(town)["reclaimed"] == 1

    assert shared_pending(town) == 0
    back = town.tasks.get(task.id)
    assert back.state == "pending" and back.attempts == 0
    live, d = worker(town, "live", state="idle")
    delivery = d.read(100)  # any worker now gets it
    assert delivery is not None and delivery.claim.task.id == task.id
    assert town.tasks.get(task.id).state == "running"


def test_recover_returns_a_held_directed_task_and_fails_one_past_max_attempts(town):
    dead, d = worker(town, "dead")
    directed = town.tasks.add("for dead", agent_id=dead.id)
    d.read(100)  # the read takes the task
    worn = town.tasks.add("worn out")
    d.read(100)  # the read takes the task
    town.redis.hset(town.keys.task(worn.id), "attempts", 2)
    silence(town, dead.id)

    assert recover(town)["reclaimed"] == 2

    assert town.tasks.get(directed.id).state == "pending"
    failed = town.tasks.get(worn.id)
    assert failed.state == "failed" and "failed after 2 attempts" in failed.result


def test_recover_leaves_the_task_of_an_agent_killed_while_its_worker_still_runs_it(town):
    killed, d = worker(town, "killed")
    task = town.tasks.add("long job")
    d.read(100)  # the worker took it and runs it
    town.redis.set(town.keys.stop(killed.id), "1")  # POST /v1/agents/{agent}/kill: stop flag …
    town.agents.update(
        killed.id, "kill", set_fields={"current_task": task.id}
    )  # … and stopped at once

    assert recover(town)["reclaimed"] == 0  # its heartbeat is fresh: the worker is finishing

    assert town.tasks.get(task.id).state == "running" and shared_pending(town) == 1
    town.redis.delete(town.keys.stop(killed.id))  # the worker took the stop request and left …
    assert recover(town)["reclaimed"] == 1  # … so what it still holds goes back
    assert town.tasks.get(task.id).state == "pending"


def test_reclaim_and_orphans_leave_the_running_task_of_a_killed_agent_whose_worker_finishes_it(
    town,
):
    killed, d = worker(town, "killed")
    task = town.tasks.add("long job")
    d.read(100)  # its worker runs it
    waiting = town.tasks.add("aimed at it, not started", agent_id=killed.id)
    town.redis.set(town.keys.stop(killed.id), "1")  # POST /v1/agents/{agent}/kill
    town.agents.update(killed.id, "kill")

    assert [o["task_id"] for o in orphan_tasks(town)["orphans"]] == [waiting.id]
    result = reclaim(town, to_backlog=True)

    assert {i["id"]: i["outcome"] for i in result["messages"] if i["kind"] == "task"} == {
        task.id: "kept",
        waiting.id: "to_backlog",
    }
    assert (
        town.tasks.get(task.id).state == "running" and town.tasks.get(waiting.id).state == "pending"
    )


def test_a_killed_agent_whose_heartbeat_went_stale_loses_its_task_to_recover(town):
    killed, d = worker(town, "killed")
    task = town.tasks.add("job")
    d.read(100)
    town.redis.set(town.keys.stop(killed.id), "1")
    town.agents.update(killed.id, "kill")
    silence(town, killed.id)  # the worker died after the kill

    assert recover(town)["reclaimed"] == 1
    assert town.tasks.get(task.id).state == "pending"


def test_a_directed_task_of_an_agent_killed_while_working_goes_back_once_its_worker_dies(town):
    # Killed (REST), then its worker died before finishing: the agent was out of the deadlines
    # index, so the keeper never woke for it and the task stayed running until tt recover.
    killed, d = worker(town, "killed")
    task = town.tasks.add("for it", agent_id=killed.id)
    d.read(100)  # its worker runs it, and beats (1 s here: dead after 3 s)
    town.agents.update(killed.id, beat=Beat(1), set_fields={"current_task": task.id})
    town.redis.set(town.keys.stop(killed.id), "1")  # POST /v1/agents/{agent}/kill
    town.agents.update(killed.id, "kill")

    deadline, _ = town.agents.next_deadline_ms()
    assert deadline is not None  # the keeper still wakes for it
    assert recover(town, sweep_terminal=False)["reclaimed"] == 0  # still finishing it

    poll(lambda: recover(town, sweep_terminal=False)["reclaimed"] == 1, timeout=10)

    assert town.tasks.get(task.id).state == "pending"
    assert town.agents.get(killed.id).current_task is None
    assert town.agents.next_deadline_ms()[0] is None  # and nothing left to wake for


def test_recover_returns_the_task_a_drained_worker_left_behind(town):
    drained, d = worker(town, "drained")
    task = town.tasks.add("handed back")
    d.read(100)  # the read takes the task
    town.agents.update(drained.id, "kill", set_fields={"current_task": task.id})

    result = recover(town)

    assert result["recovered"] == 0 and result["reclaimed"] == 1
    assert town.tasks.get(task.id).state == "pending"


def test_recover_leaves_live_agents_and_their_work_alone(town):
    live, d = worker(town, "live")
    task = town.tasks.add("in progress")
    d.read(100)  # the read takes the task
    assert recover(town) == {"checked": 1, "recovered": 0, "agents": [], "reclaimed": 0}
    assert town.tasks.get(task.id).state == "running" and shared_pending(town) == 1


# -- reclaim ---------------------------------------------------------------------------------------


def stopped_agent_with_work(town):
    agent = town.agents.register("gone", "fake")
    directed = town.tasks.add("directed work", agent_id=agent.id)
    town.inbox.send(agent.id, "please also fix the docs")  # a task message
    town.inbox.send(agent.id, "fyi: CI is slow", kind="info")
    town.agents.update(agent.id, "kill")
    return agent, directed


def test_reclaim_without_a_destination_only_lists_and_discards_nothing(town):
    agent, directed = stopped_agent_with_work(town)

    result = reclaim(town)

    assert result["destination"] == "Listed" and result["reclaimed"] == 3
    assert {m["outcome"] for m in result["messages"]} == {"listed"}
    assert town.redis.llen(town.keys.inbox(agent.id)) == 2
    assert town.tasks.get(directed.id).state == "assigned"


def test_reclaim_to_the_backlog_moves_tasks_and_keeps_other_messages(town):
    agent, directed = stopped_agent_with_work(town)

    result = reclaim(town, to_backlog=True)

    assert result["destination"] == "Backlog" and result["reclaimed"] == 2
    assert town.tasks.get(directed.id).state == "pending"
    backlog = [t.description for t in town.tasks.many(town.tasks.backlog()[0])]
    assert sorted(backlog) == ["directed work", "please also fix the docs"]
    left = [m["type"] for m in town.inbox.peek(agent.id)[0]]
    assert left == ["informational"]  # a backlog holds tasks; the note stays where it was
    assert {m["summary"]: m["outcome"] for m in result["messages"]}["fyi: CI is slow"] == "kept"


def test_reclaim_to_an_agent_moves_messages_and_reassigns_directed_tasks(town):
    agent, directed = stopped_agent_with_work(town)
    target = town.agents.register("heir", "fake")

    result = reclaim(town, to_agent="heir")

    assert result["destination"] == 'Agent("heir")' and result["reclaimed"] == 3
    moved = town.tasks.get(directed.id)
    assert moved.state == "assigned" and moved.assigned_to == target.id
    assert [e[1]["task_id"] for e in town.redis.xrange(town.keys.agent_docket(target.id))] == [
        directed.id
    ]
    assert town.redis.llen(town.keys.inbox(agent.id)) == 0
    assert [m["to"] for m in town.inbox.peek(target.id)[0]] == [target.id, target.id]


@pytest.mark.parametrize("move", ["kill", "drain"])
def test_reclaim_to_an_agent_that_takes_no_more_work_is_refused_and_moves_nothing(town, move):
    agent, directed = stopped_agent_with_work(town)
    heir = town.agents.register("heir", "fake")
    town.agents.set_state(heir.id, move)
    with pytest.raises(InvalidTransition, match="restart it first, or reclaim to the backlog"):
        reclaim(town, to_agent="heir")
    assert town.tasks.get(directed.id).assigned_to == agent.id
    assert town.redis.llen(town.keys.inbox(agent.id)) == 2


def test_reclaim_refuses_a_running_agent_and_two_destinations(town):
    town.agents.register("busy", "fake")
    with pytest.raises(InvalidTransition):
        reclaim(town, from_agent="busy", to_backlog=True)
    with pytest.raises(ValueError):
        reclaim(town, to_backlog=True, to_agent="busy")


# -- orphan tasks ----------------------------------------------------------------------------------


def orphans_setup(town):
    stopped = town.agents.register("stopped-one", "fake")
    on_stopped = town.tasks.add("a", agent_id=stopped.id)
    town.agents.update(stopped.id, "kill")
    ghost = town.agents.register("ghost", "fake")
    on_ghost = town.tasks.add("b", agent_id=ghost.id)
    town.agents.delete(ghost.id)
    live = town.agents.register("live", "fake")
    town.tasks.add("c", agent_id=live.id)
    return on_stopped, on_ghost


def test_orphan_tasks_lists_tasks_of_missing_and_terminal_agents(town):
    on_stopped, on_ghost = orphans_setup(town)
    result = orphan_tasks(town)
    assert result["action"] == "list" and result["count"] == 2
    reasons = {o["task_id"]: o["reason"] for o in result["orphans"]}
    assert reasons == {on_stopped.id: "agent_terminal", on_ghost.id: "agent_missing"}


@pytest.mark.parametrize("action", ["to_backlog", "backlog"])
def test_orphan_tasks_to_backlog_requeues_them(town, action):
    on_stopped, on_ghost = orphans_setup(town)
    assert orphan_tasks(town, action)["count"] == 2
    assert {town.tasks.get(i).state for i in (on_stopped.id, on_ghost.id)} == {"pending"}
    assert orphan_tasks(town)["count"] == 0


def test_orphan_tasks_cancel_and_delete(town):
    on_stopped, on_ghost = orphans_setup(town)
    orphan_tasks(town, "cancel")
    assert town.tasks.get(on_ghost.id).result == "Cancelled: assignee no longer exists"
    assert town.tasks.get(on_stopped.id).result == "Cancelled: assignee is in a terminal state"
    again = orphans_setup(town)
    orphan_tasks(town, "delete")
    assert all(town.tasks.find(t.id) is None for t in again)


def test_orphan_tasks_rejects_an_unknown_action(town):
    with pytest.raises(ValueError, match="unknown action 'purge'"):
        orphan_tasks(town, "purge")


# -- tt commands -----------------------------------------------------------------------------------


def test_tt_send_and_inbox(town, run_tt):
    town.agents.register("bob", "fake")
    sent = run_tt("send", "bob", "look at issue 7", "--kind", "query", "--json")
    assert sent.returncode == 0, sent.stderr
    shown = json.loads(run_tt("inbox", "bob", "--json").stdout)
    assert shown["total"] == 1 and shown["messages"][0]["type"] == "query"
    assert shown["messages"][0]["summary"] == "look at issue 7"


def test_tt_recover_and_reclaim_print_json(town, run_tt):
    dead, d = worker(town, "dead")
    town.tasks.add("x")
    d.read(100)  # the read takes the task
    silence(town, dead.id)
    recovered = json.loads(run_tt("recover", "--json").stdout)
    assert recovered == {"checked": 1, "recovered": 1, "agents": ["dead"], "reclaimed": 1}
    listed = run_tt("reclaim", "--json")
    assert listed.returncode == 0 and json.loads(listed.stdout)["destination"] == "Listed"
    orphans = json.loads(run_tt("reclaim", "--orphan-tasks", "--json").stdout)
    assert orphans["action"] == "list"
    assert run_tt("reclaim", "--cancel").returncode == 2
