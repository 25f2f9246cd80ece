"""The docket's consume side against real Redis: read, claim, keep-alive, reclaim, dead consumers."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from tinytown.config import load_config
from tinytown.docket import Docket, holders, is_dead
from tinytown.records import Agent, now, to_rfc3339
from tinytown.store import Town

from .conftest import write_town

AGENT = "[agent]\nheartbeat_interval_secs = 1\nclaim_timeout_secs = 2\nmax_attempts = 2\n"
LONG_AGO = to_rfc3339(now() - timedelta(minutes=5))


@pytest.fixture
def town(tmp_path, redis_url):
    t = Town.connect(load_config(write_town(tmp_path, redis_url, tables=AGENT), env={}))
    yield t
    t.redis.close()


def docket_for(town, name):
    agent = town.agents.register(name, "fake")
    d = Docket(town, agent.id)
    d.ensure_groups()
    return d


def make_idle(town, stream, entry_id, holder, ms=10_000):
    """Age a held entry without sleeping (XCLAIM … IDLE sets its idle time)."""
    town.redis.xclaim(stream, "workers", holder, 0, [entry_id], idle=ms, justid=True)


def kill(town, agent_id):
    town.agents.update(agent_id, set_fields={"last_heartbeat": LONG_AGO})


def test_is_dead_means_missing_terminal_or_silent_for_several_heartbeats(town):
    cfg = town.config  # heartbeat 1 s → dead after 3 s
    fresh = Agent(id="a", name="a", state="idle", last_heartbeat=to_rfc3339(now()))
    assert not is_dead(fresh, cfg)
    assert is_dead(None, cfg)
    assert is_dead(Agent(id="a", name="a", state="stopped", last_heartbeat=to_rfc3339(now())), cfg)
    assert is_dead(Agent(id="a", name="a", state="working", last_heartbeat=to_rfc3339(now() - timedelta(seconds=4))), cfg)


def test_one_read_covers_the_agents_own_stream_and_the_shared_docket(town):
    d = docket_for(town, "reader")
    shared = town.tasks.add("for anyone")
    entry = d.read(100)
    assert (entry.task_id, entry.directed) == (shared.id, False)
    directed = town.tasks.add("for me", agent_id=d.agent_id)
    entry = d.read(100)
    assert (entry.task_id, entry.directed) == (directed.id, True)
    assert d.read(10) is None


def test_when_both_streams_have_an_entry_the_second_is_handed_back_for_others(town):
    d, other = docket_for(town, "reader"), docket_for(town, "other")
    shared = town.tasks.add("for anyone")
    directed = town.tasks.add("for me", agent_id=d.agent_id)

    first = d.read(100)

    assert first.task_id == directed.id  # own stream first
    assert town.redis.xpending(town.keys.docket, "workers")["pending"] == 0  # the other went back
    assert other.read(100).task_id == shared.id  # … and another worker gets it


def test_claim_takes_a_pending_task_in_one_step(town):
    d = docket_for(town, "w")
    task = town.tasks.add("x")
    claim = d.claim(d.read(100))
    assert claim.task.state == "running" and claim.task.assigned_to == d.agent_id
    assert claim.task.attempts == 1 and claim.task.started_at
    assert town.redis.lrange(town.keys.backlog, 0, -1) == []
    assert town.tasks.get(task.id).state == "running"


def test_claim_skips_a_removed_task_and_one_taken_elsewhere(town):
    d = docket_for(town, "w")
    removed = town.tasks.add("gone")
    town.tasks.remove_from_backlog(removed.id)
    assert d.claim(d.read(100)).reason == "missing"
    taken = town.tasks.add("taken")
    town.tasks.complete(taken.id, "done elsewhere")
    assert d.claim(d.read(100)).reason == "state:completed"


def test_an_entry_on_another_agents_stream_cannot_take_its_task(town):
    mine, theirs = docket_for(town, "mine"), docket_for(town, "theirs")
    task = town.tasks.add("for theirs", agent_id=theirs.agent_id)
    entry = theirs.read(100)
    forged = type(entry)(entry.stream, entry.entry_id, task.id, True)
    assert mine.claim(forged).reason == "owner"
    assert theirs.claim(entry).task is not None


def test_of_many_concurrent_claims_of_one_task_exactly_one_wins(town):
    task = town.tasks.add("contested")
    entry = docket_for(town, "first").read(100)
    dockets = [docket_for(town, f"w{i}") for i in range(8)]
    results, barrier = [], threading.Barrier(len(dockets))

    def claim(d):
        barrier.wait()
        results.append(d.claim(entry))

    threads = [threading.Thread(target=claim, args=(d,)) for d in dockets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(1 for r in results if r.task is not None) == 1
    assert town.tasks.get(task.id).attempts == 1


def test_keep_alive_resets_idle_time_and_never_takes_back_a_reclaimed_entry(town):
    d, thief = docket_for(town, "holder"), docket_for(town, "thief")
    town.tasks.add("x")
    entry = d.read(100)
    make_idle(town, town.keys.docket, entry.entry_id, d.agent_id)
    assert d.keep_alive(entry)
    idle = town.redis.xpending_range(town.keys.docket, "workers", "-", "+", 1)[0]["time_since_delivered"]
    assert idle < 1000
    town.redis.xclaim(town.keys.docket, "workers", thief.agent_id, 0, [entry.entry_id], justid=True)
    assert not d.keep_alive(entry)
    assert town.redis.xpending_range(town.keys.docket, "workers", "-", "+", 1)[0]["consumer"] == thief.agent_id


def test_reclaim_takes_only_old_entries_of_dead_holders(town):
    live, dead, rescuer = docket_for(town, "live"), docket_for(town, "dead"), docket_for(town, "rescuer")
    town.tasks.add("a")
    town.tasks.add("b")
    held_live, held_dead = live.read(100), dead.read(100)
    live.claim(held_live)
    dead.claim(held_dead)
    assert rescuer.reclaim_one() is None  # neither is idle long enough
    make_idle(town, town.keys.docket, held_live.entry_id, live.agent_id)
    make_idle(town, town.keys.docket, held_dead.entry_id, dead.agent_id)
    assert rescuer.reclaim_one() is None  # old, but both holders still beat
    kill(town, dead.agent_id)

    taken = rescuer.reclaim_one()

    assert (taken.task_id, taken.reclaimed_from) == (held_dead.task_id, dead.agent_id)
    claim = rescuer.claim(taken)
    assert claim.task.assigned_to == rescuer.agent_id and claim.task.attempts == 2
    assert rescuer.reclaim_one() is None
    assert holders(town.redis, town.keys.docket) == {live.agent_id: 1, rescuer.agent_id: 1}  # the live holder kept its entry


def test_a_reclaimed_task_past_max_attempts_is_failed_with_the_reason(town):
    dead, rescuer = docket_for(town, "dead"), docket_for(town, "rescuer")
    task = town.tasks.add("keeps killing its worker")
    entry = dead.read(100)
    dead.claim(entry)
    town.redis.hset(town.keys.task(task.id), "attempts", 2)  # max_attempts = 2
    make_idle(town, town.keys.docket, entry.entry_id, dead.agent_id)
    kill(town, dead.agent_id)

    claim = rescuer.claim(rescuer.reclaim_one())

    assert claim.task is None and claim.reason == "attempts"
    failed = town.tasks.get(task.id)
    assert failed.state == "failed" and "failed after 2 attempts" in failed.result and dead.agent_id in failed.result


def test_dead_consumers_that_hold_nothing_leave_the_group(town):
    holder, empty, live = docket_for(town, "holder"), docket_for(town, "empty"), docket_for(town, "live")
    town.tasks.add("x")
    town.tasks.add("y")
    holder.read(100)
    empty.ack(empty.read(100))  # a consumer that once held an entry and finished it
    kill(town, holder.agent_id)
    kill(town, empty.agent_id)

    removed = live.forget_dead_consumers()

    assert removed == [empty.agent_id]
    names = {c["name"] for c in town.redis.xinfo_consumers(town.keys.docket, "workers")}
    assert names == {holder.agent_id}  # it still holds an entry: reclaim first
