"""The docket's consume side against real Redis: read (which claims), claim, keep-alive, reclaim,
dead consumers."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
import redis

from tinytown.config import load_config
from tinytown.core.clock import now, parse_rfc3339, to_rfc3339
from tinytown.core.liveness import Beat
from tinytown.core.records import Agent
from tinytown.store import Town
from tinytown.store.docket import Docket
from tinytown.store.dockets import holders, is_dead

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
    town.agents.update(agent_id, beat=Beat(1, age_ms=300_000))


def test_is_dead_means_missing_terminal_or_past_its_own_heartbeat_window(town):
    now_ms = town.agents.now_ms()
    assert not is_dead(Agent(id="a", name="a", state="idle", alive_until=now_ms + 1), now_ms)
    assert is_dead(None, now_ms)
    assert is_dead(Agent(id="a", name="a", state="stopped", alive_until=now_ms + 10_000), now_ms)
    assert is_dead(Agent(id="a", name="a", state="working", alive_until=now_ms), now_ms)
    beating = town.agents.register(
        "beating", "fake", heartbeat_interval_secs=1
    )  # dead 3 s after a beat
    assert not is_dead(town.agents.get(beating.id), now_ms)
    kill(town, beating.id)
    assert is_dead(town.agents.get(beating.id), town.agents.now_ms())


def test_one_read_covers_the_agents_own_stream_and_the_shared_docket(town):
    d = docket_for(town, "reader")
    shared = town.tasks.add("for anyone")
    got = d.read(100)
    assert (got.entry.task_id, got.entry.directed) == (shared.id, False)
    d.ack(got.entry)
    directed = town.tasks.add("for me", agent_id=d.agent_id)
    got = d.read(100)
    assert (got.entry.task_id, got.entry.directed) == (directed.id, True)
    d.ack(got.entry)
    assert d.read(10) is None


@pytest.mark.parametrize("protocol", [2, 3])
def test_when_both_streams_have_an_entry_the_second_is_handed_back_for_others(town, protocol):
    agent = town.agents.register("reader", "fake")
    # The read parses the raw reply: a list of pairs under RESP2 (redis-py < 8), a map under RESP3.
    pool = town.redis.connection_pool
    kwargs = {**pool.connection_kwargs, "protocol": protocol}
    reader = redis.Redis(
        connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs),
        single_connection_client=True,
    )
    d, other = Docket(town, agent.id, reader=reader), docket_for(town, "other")
    d.ensure_groups()
    shared = town.tasks.add("for anyone")
    directed = town.tasks.add("for me", agent_id=d.agent_id)

    first = d.read(100)

    assert (
        first.entry.task_id == directed.id and first.claim.task.id == directed.id
    )  # own stream first
    assert town.redis.xpending(town.keys.docket, "workers")["pending"] == 0  # the other went back
    assert other.read(100).claim.task.id == shared.id  # … and another worker gets it
    assert town.tasks.get(shared.id).assigned_to == other.agent_id
    reader.close()


def test_the_read_takes_the_task_in_the_same_round_trip_with_the_agents_messages(town):
    d = docket_for(town, "w")
    town.redis.rpush(town.keys.inbox(d.agent_id), '{"type": "info", "body": "hello"}')
    task = town.tasks.add("x")

    got = d.read(100)

    claim = got.claim
    assert (
        claim.task.id == task.id
        and claim.task.state == "running"
        and claim.task.assigned_to == d.agent_id
    )
    assert claim.task.attempts == 1 and parse_rfc3339(claim.task.started_at) is not None
    assert (
        abs((parse_rfc3339(claim.task.updated_at) - now()).total_seconds()) < 5
    )  # the Redis clock, as RFC 3339
    assert claim.peeked == (
        [],
        ['{"type": "info", "body": "hello"}'],
    )  # read, not taken: the CLI start takes them
    assert town.redis.lrange(town.keys.backlog, 0, -1) == []
    assert town.tasks.get(task.id).state == "running"
    assert town.tasks.counts()["running"] == 1 and town.tasks.counts()["pending"] == 0


def test_the_read_skips_and_acknowledges_entries_of_removed_finished_or_reassigned_tasks(town):
    d, other = docket_for(town, "w"), docket_for(town, "other")
    removed = town.tasks.add("gone")
    town.tasks.remove_from_backlog(removed.id)
    got = d.read(100)
    assert got.entry is None and [(e.task_id, why) for e, why in got.skipped] == [
        (removed.id, "missing")
    ]
    taken = town.tasks.add("taken")
    town.tasks.complete(taken.id, "done elsewhere")
    assert [why for _, why in d.read(100).skipped] == ["state:completed"]
    moved = town.tasks.add("for w", agent_id=d.agent_id)
    town.tasks.requeue(moved.id, to_agent=other.agent_id)  # reassigned before w read it
    assert [why for _, why in d.read(100).skipped] == ["owner"]
    assert (
        holders(town.redis, town.keys.docket) == {}
        and holders(town.redis, town.keys.agent_docket(d.agent_id)) == {}
    )


def test_an_entry_whose_task_already_runs_for_this_agent_is_left_held_for_resuming(town):
    d = docket_for(town, "w")
    task = town.tasks.add("x")
    first = d.read(100)  # … and say its reply was lost: the task runs for w, its entry is held
    later = town.tasks.add("y")

    got = d.read(100)

    assert got.claim.task.id == later.id and got.skipped == ()
    assert [e.entry_id for e in d.held_by_me()] == [first.entry.entry_id, got.entry.entry_id]
    resumed = d.claim(d.held_by_me()[0])
    assert resumed.task.id == task.id and resumed.task.attempts == 2


@pytest.mark.parametrize("state", ["paused", "stopped", "draining"])
def test_an_agent_told_to_take_no_work_takes_none_and_what_came_goes_back(town, state):
    d, other = docket_for(town, "w"), docket_for(town, "other")
    town.agents.update(
        d.agent_id, {"paused": "pause", "stopped": "kill", "draining": "drain"}[state]
    )
    task = town.tasks.add("arrives as the agent is paused or stopped")

    got = d.read(100)

    assert (got.entry, got.claim, got.refused) == (None, None, state)
    assert town.tasks.get(task.id).state == "pending" and town.tasks.get(task.id).attempts == 0
    assert holders(town.redis, town.keys.docket) == {}  # handed back at once …
    assert other.read(100).claim.task.id == task.id  # … for another worker


def test_a_lost_script_cache_is_reloaded_and_the_delivered_entry_still_taken(town):
    d = docket_for(town, "w")
    town.redis.script_flush()
    task = town.tasks.add("x")
    assert d.read(100).claim.task.id == task.id


def test_a_read_without_entries_leaves_everything_untouched(town):
    d = docket_for(town, "w")
    assert d.read(5) is None
    assert holders(town.redis, town.keys.docket) == {}


def test_of_many_concurrent_reads_of_duplicate_entries_of_one_task_exactly_one_takes_it(town):
    task = town.tasks.add("contested")
    for _ in range(7):  # duplicates, as a requeue or a hand-back can leave behind
        town.redis.xadd(town.keys.docket, {"task_id": task.id})
    dockets = [docket_for(town, f"w{i}") for i in range(8)]
    results, barrier = [], threading.Barrier(len(dockets))

    def read(d):
        barrier.wait()
        results.append(d.read(2000))

    threads = [threading.Thread(target=read, args=(d,)) for d in dockets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(1 for r in results if r is not None and r.claim is not None) == 1
    assert (
        sorted(why for r in results if r is not None for _, why in r.skipped)
        == ["state:running"] * 7
    )
    assert town.tasks.get(task.id).attempts == 1


def test_keep_alive_resets_idle_time_and_never_takes_back_a_reclaimed_entry(town):
    d, thief = docket_for(town, "holder"), docket_for(town, "thief")
    town.tasks.add("x")
    entry = d.read(100).entry
    make_idle(town, town.keys.docket, entry.entry_id, d.agent_id)
    assert d.keep_alive(entry)
    idle = town.redis.xpending_range(town.keys.docket, "workers", "-", "+", 1)[0][
        "time_since_delivered"
    ]
    assert idle < 1000
    town.redis.xclaim(town.keys.docket, "workers", thief.agent_id, 0, [entry.entry_id], justid=True)
    assert not d.keep_alive(entry)
    assert (
        town.redis.xpending_range(town.keys.docket, "workers", "-", "+", 1)[0]["consumer"]
        == thief.agent_id
    )


def test_an_old_holder_never_acknowledges_an_entry_taken_over_from_it(town):
    """A holder judged dead while it still ran (found by the chaos run after a Redis restart)
    finishes later: its acknowledgement must not remove the new holder's entry."""
    old, new = docket_for(town, "old"), docket_for(town, "new")
    town.tasks.add("x")
    entry = old.read(100).entry
    town.redis.xclaim(town.keys.docket, "workers", new.agent_id, 0, [entry.entry_id], justid=True)

    assert not old.ack(entry)

    assert holders(town.redis, town.keys.docket) == {new.agent_id: 1}
    assert new.ack(entry) and holders(town.redis, town.keys.docket) == {}


def test_reclaim_takes_only_old_entries_of_dead_holders(town):
    live, dead, rescuer = (
        docket_for(town, "live"),
        docket_for(town, "dead"),
        docket_for(town, "rescuer"),
    )
    town.tasks.add("a")
    town.tasks.add("b")
    held_live, held_dead = live.read(100).entry, dead.read(100).entry  # each read takes its task
    assert rescuer.reclaim_one() is None  # neither is idle long enough
    make_idle(town, town.keys.docket, held_live.entry_id, live.agent_id)
    make_idle(town, town.keys.docket, held_dead.entry_id, dead.agent_id)
    assert rescuer.reclaim_one() is None  # old, but both holders still beat
    kill(town, dead.agent_id)

    taken = rescuer.reclaim_one()

    assert (taken.task_id, taken.reclaimed_from) == (held_dead.task_id, dead.agent_id)
    claim = rescuer.claim(taken)
    assert claim.task.assigned_to == rescuer.agent_id and claim.task.attempts == 2
    starts = [
        e
        for e in town.events.latest(50)
        if e["event_type"] == "task_started" and e["task_id"] == taken.task_id
    ]
    assert [(e["old_state"], e["agent_id"], e.get("attempt")) for e in starts] == [
        ("pending", dead.agent_id, 1),
        ("running", rescuer.agent_id, 2),  # the take-over is in the feed too
    ]
    assert rescuer.reclaim_one() is None
    assert holders(town.redis, town.keys.docket) == {
        live.agent_id: 1,
        rescuer.agent_id: 1,
    }  # the live holder kept its entry


def test_a_reclaimed_task_past_max_attempts_is_failed_with_the_reason(town):
    dead, rescuer = docket_for(town, "dead"), docket_for(town, "rescuer")
    task = town.tasks.add("keeps killing its worker")
    entry = dead.read(100).entry
    town.redis.hset(town.keys.task(task.id), "attempts", 2)  # max_attempts = 2
    make_idle(town, town.keys.docket, entry.entry_id, dead.agent_id)
    kill(town, dead.agent_id)

    claim = rescuer.claim(rescuer.reclaim_one())

    assert claim.task is None and claim.reason == "attempts"
    failed = town.tasks.get(task.id)
    assert (
        failed.state == "failed"
        and "failed after 2 attempts" in failed.result
        and dead.agent_id in failed.result
    )


def test_dead_consumers_that_hold_nothing_leave_the_group(town):
    holder, empty, live = (
        docket_for(town, "holder"),
        docket_for(town, "empty"),
        docket_for(town, "live"),
    )
    town.tasks.add("x")
    town.tasks.add("y")
    holder.read(100)
    empty.ack(empty.read(100).entry)  # a consumer that once held an entry and finished it
    kill(town, holder.agent_id)
    kill(town, empty.agent_id)

    kept = live.forget_dead_consumers(60_000)  # both read a moment ago: not looked at
    removed = live.forget_dead_consumers(0)

    assert kept == []
    assert removed == [empty.agent_id]
    names = {c["name"] for c in town.redis.xinfo_consumers(town.keys.docket, "workers")}
    assert names == {holder.agent_id}  # it still holds an entry: reclaim first


def test_a_blocking_read_longer_than_the_socket_timeout_waits_it_out(town):
    """The idle read blocks past the connection's socket timeout (redis-py 8's default 5 s equals
    the worker's 5 s block) and simply returns nothing, without a timeout error or reconnect."""
    agent = town.agents.register("patient", "fake")
    short = redis.Redis(
        connection_pool=redis.ConnectionPool(
            connection_class=town.redis.connection_pool.connection_class,
            **{**town.redis.connection_pool.connection_kwargs, "socket_timeout": 0.2},
        ),
        single_connection_client=True,
    )
    d = Docket(town, agent.id, reader=short)
    d.ensure_groups()
    before = short.connection._sock
    assert d.read(600) is None
    assert short.connection._sock is before  # the same connection: no reconnect
    short.close()
