"""Agent records: registration, adoption, references, state indexes, heartbeats."""

from __future__ import annotations

import pytest

from tinytown.core.errors import InvalidTransition, NotFound, TinytownError
from tinytown.core.liveness import Beat
from tinytown.core.states import ACTIVE_AGENT_STATES, AGENT_STATES
from tinytown.store.agent_index import upgrade_index


def assert_agent_indexes_exact(town):
    ids = town.redis.smembers(town.keys.agents)
    seen = set()
    for state in AGENT_STATES:
        members = set(town.redis.zrange(town.keys.agents_in_state(state), 0, -1))
        assert not (members & seen)
        seen |= members
        for agent_id in members:
            assert town.redis.hget(town.keys.agent(agent_id), "state") == state
    assert seen == ids
    # the deadlines index: exactly the agents in an active state, each at its alive_until
    deadlines = dict(town.redis.zrange(town.keys.agents_alive, 0, -1, withscores=True))
    active = {
        i: int(town.redis.hget(town.keys.agent(i), "alive_until") or 0)
        for state in ACTIVE_AGENT_STATES
        for i in town.redis.zrange(town.keys.agents_in_state(state), 0, -1)
    }
    assert {i: int(v) for i, v in deadlines.items()} == active


def test_register_writes_record_indexes_and_its_docket_group(town):
    agent = town.agents.register("alice", "claude", role_id="backend")
    stored = town.agents.get(agent.id)
    assert (stored.name, stored.state, stored.cli, stored.role_id) == (
        "alice",
        "starting",
        "claude",
        "backend",
    )
    assert stored.nickname and stored.last_heartbeat and stored.alive(town.agents.now_ms())
    assert town.agents.counts().live["starting"] == 1
    assert [g["name"] for g in town.redis.xinfo_groups(town.keys.agent_docket(agent.id))] == [
        "workers"
    ]
    assert_agent_indexes_exact(town)


def test_register_with_a_known_id_adopts_the_record(town):
    first = town.agents.register("w1", "claude")
    town.agents.set_state(first.id, "kill", tasks_completed="4")
    again = town.agents.register("w1", "codex", agent_id=first.id)
    assert again.id == first.id and again.state == "starting" and again.cli == "codex"
    assert again.tasks_completed == 4 and again.created_at == first.created_at
    assert town.redis.scard(town.keys.agents) == 1
    assert_agent_indexes_exact(town)


def test_register_with_a_new_id_uses_it(town):
    agent = town.agents.register("w2", "claude", agent_id="6f1c1b8e-2d7a-4a53-9d5e-0a1b2c3d4e5f")
    assert town.agents.get("6f1c1b8e-2d7a-4a53-9d5e-0a1b2c3d4e5f").name == "w2"
    assert agent.id == "6f1c1b8e-2d7a-4a53-9d5e-0a1b2c3d4e5f"


@pytest.mark.parametrize("name", ["supervisor", "Conductor"])
def test_reserved_names_are_refused(town, name):
    with pytest.raises(TinytownError, match="reserved"):
        town.agents.register(name, "claude")
    assert town.redis.scard(town.keys.agents) == 0


def test_resolve_by_id_name_nickname_and_short_id(town):
    agent = town.agents.register("Builder", "claude", nickname="Dot")
    for ref in (agent.id, "builder", "dot", agent.id[:4]):
        assert town.agents.resolve(ref).id == agent.id
    with pytest.raises(NotFound):
        town.agents.resolve("nobody")


def test_ambiguous_name_prefers_the_one_live_agent_else_fails(town):
    old = town.agents.register("twin", "claude")
    town.agents.set_state(old.id, "kill")
    new = town.agents.register("twin", "claude")
    assert town.agents.resolve("twin").id == new.id
    town.agents.register("twin", "claude")
    with pytest.raises(TinytownError, match="ambiguous"):
        town.agents.resolve("twin")


def test_state_changes_keep_indexes_exact_and_guards_hold(town):
    agent = town.agents.register("w", "claude")
    assert town.agents.set_state(agent.id, "ready") == "starting"
    town.agents.set_state(agent.id, "work", current_task="t1")
    with pytest.raises(InvalidTransition):
        town.agents.set_state(agent.id, "ready")  # only from starting
    assert town.agents.get(agent.id).current_task == "t1"
    assert town.agents.counts().live["working"] == 1 and town.agents.counts().live["idle"] == 0
    assert_agent_indexes_exact(town)


def test_heartbeat_never_recreates_a_deleted_agent(town):
    agent = town.agents.register("gone", "claude")
    town.agents.delete(agent.id)
    assert town.agents.heartbeat(agent.id) is False
    assert not town.redis.exists(town.keys.agent(agent.id))
    assert_agent_indexes_exact(town)


def test_a_name_wins_over_another_agents_nickname(town):
    """Nicknames are generated (Alice is one): an agent named alice is still "alice"."""
    named = town.agents.register("alice", "claude", nickname="Robert")
    town.agents.register("bob", "claude", nickname="Alice")
    assert town.agents.resolve("alice").id == named.id
    assert town.agents.resolve("ALICE").id == named.id


def test_a_town_with_the_old_state_sets_is_upgraded_on_connect(town):
    """Before liveness was indexed each state was a plain set; connecting rebuilds the index from
    the records (liveness from their last_heartbeat) and removes the sets."""
    from tinytown.core.clock import now, to_rfc3339
    from tinytown.store import Town

    agent = town.agents.register("old-timer", "claude")
    town.agents.update(agent.id, "ready")
    town.redis.delete(town.keys.agents_in_state("idle"))
    town.redis.hset(town.keys.agent(agent.id), mapping={"last_heartbeat": to_rfc3339(now())})
    town.redis.hdel(town.keys.agent(agent.id), "alive_until", "heartbeat_interval_secs")
    town.redis.sadd(town.keys.legacy_agents_in_state("idle"), agent.id)

    upgraded = Town.connect(town.config)
    assert not town.redis.exists(town.keys.legacy_agents_in_state("idle"))
    assert upgraded.agents.counts().live["idle"] == 1
    assert upgraded.agents.get(agent.id).alive(upgraded.agents.now_ms())
    assert_agent_indexes_exact(town)
    upgraded.redis.close()


def test_the_deadlines_index_follows_beats_moves_and_deletes(town):
    a = town.agents.register("alice", "claude")
    b = town.agents.register("bob", "claude")
    town.agents.update(a.id, "ready")
    town.agents.heartbeat(b.id, 30)
    assert_agent_indexes_exact(town)
    deadline, now_ms = town.agents.next_deadline_ms()
    assert deadline == town.agents.get(a.id).alive_until and deadline > now_ms

    town.agents.update(a.id, "stop")
    assert_agent_indexes_exact(town)
    assert town.agents.next_deadline_ms()[0] == town.agents.get(b.id).alive_until
    town.agents.delete(b.id)
    assert_agent_indexes_exact(town)
    assert town.agents.next_deadline_ms()[0] is None


def test_a_missing_deadlines_index_is_rebuilt_on_connect_and_stale_scores_are_set_right(town):
    from tinytown.store import Town

    a = town.agents.register("alice", "claude")
    town.agents.register("bob", "claude")
    town.redis.delete(town.keys.agents_alive)  # a town kept by a version without the index

    upgrade_index(Town(town.config, town.redis).agents)
    assert_agent_indexes_exact(town)

    town.redis.zadd(town.keys.agents_alive, {a.id: 1})  # stale: an older worker's beat
    assert town.agents.dead() == []  # the record says alive
    assert_agent_indexes_exact(town)


def test_a_worker_beat_reads_its_controls_and_never_recreates_a_record(town):
    from tinytown.store.worker import WorkerStore

    a = town.agents.register("alice", "claude")
    store = WorkerStore(town, a.id, 1)
    docket = town.docket(a.id)
    quiet = store.beat(docket, None, 30)
    assert (quiet.state, quiet.stop_requested, quiet.has_messages) == ("starting", False, False)
    record = town.agents.get(a.id)
    assert record.heartbeat_interval_secs == 30
    assert record.alive_until - town.agents.now_ms() > 80_000  # 3 × 30 s from now
    assert_agent_indexes_exact(town)

    town.redis.set(town.keys.stop(a.id), "1")
    town.inbox.send(a.id, "hello")
    loud = store.beat(docket, None, 30)
    assert (loud.stop_requested, loud.has_messages) == (True, True)

    town.agents.delete(a.id)
    assert store.beat(docket, None, 30).state is None
    assert not town.redis.exists(town.keys.agent(a.id))
    assert town.redis.zscore(town.keys.agents_alive, a.id) is None
    docket.close()


def test_a_pause_between_the_claim_and_the_clis_start_holds(town):
    """The CLI start's move to working does not undo a pause that landed after the claim; the
    record still names the task and the CLI, with a heartbeat of the working window."""
    from tinytown.store.worker import WorkerStore

    a = town.agents.register("alice", "claude")
    town.agents.update(a.id, "ready")
    task = town.tasks.add("refactor")
    town.tasks.assign(task.id, a.id)
    store = WorkerStore(town, a.id, 7)
    town.agents.update(a.id, "pause")  # an operator, while the workspace is being prepared
    status, old, _ = store.cli_started(
        task.id, "2026-12-07T00:00:00+00:00", pgid=4242, host="vm1", taken=[]
    )
    assert (status, old) == ("state", "paused")
    record = town.agents.get(a.id)
    assert record.state == "paused" and record.current_task == task.id
    assert town.redis.hget(town.keys.agent(a.id), "cli_pgid") == "4242"
    assert record.heartbeat_interval_secs == 7
    assert 0 < record.alive_until - town.agents.now_ms() <= 3 * 7_000 + 1_000
    assert_agent_indexes_exact(town)

    town.agents.update(a.id, "resume")  # and an agent that is not paused starts working
    b = WorkerStore(town, a.id, 7).cli_started(
        task.id, "2026-12-07T00:00:01+00:00", pgid=4243, host="vm1", taken=[]
    )
    assert b[:2] == ("ok", "idle") and town.agents.get(a.id).state == "working"
