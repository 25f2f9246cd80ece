"""Agents do not pile up: default names are unique, a live agent's name cannot be taken, and
townhall's keeper forgets stopped agents after [agent] retention_secs."""

from __future__ import annotations

import re
import socket
import threading

import pytest

import agent_worker
from tinytown.config import load_config
from tinytown.core.errors import ConfigError
from tinytown.core.liveness import Beat
from tinytown.core.states import AGENT_STATES
from tinytown.keeper import Keeper
from tinytown.store import Town
from tinytown.store.agents import NameTaken

from .conftest import write_town
from .worker_support import workers, write_worker_town  # noqa: F401 - fixture

HOUR_MS = 3_600_000


# --- names ------------------------------------------------------------------------------------


def test_the_default_name_is_the_host_name_and_four_random_hex_digits():
    names = {agent_worker.default_agent_name("vm") for _ in range(8)}
    assert all(re.fullmatch(r"vm-[0-9a-f]{4}", n) for n in names) and len(names) > 1
    assert len(agent_worker.default_agent_name("h" * 80)) == 64


def test_an_adopted_agent_id_gives_a_stable_default_name():
    agent_id = "3f9a1c2e-0000-4000-8000-000000000000"
    assert agent_worker.default_agent_name("vm", agent_id) == "vm-3f9a"


def test_a_live_agents_name_is_refused_a_stopped_or_dead_ones_is_not(town):
    live = town.agents.register("builder", "claude", unique_name=True)
    with pytest.raises(NameTaken, match=rf"taken by live agent {live.id}.*TINYTOWN_AGENT_NAME"):
        town.agents.register("Builder", "claude", unique_name=True)
    town.agents.set_state(live.id, "kill")
    second = town.agents.register("builder", "claude", unique_name=True)
    town.agents.update(second.id, beat=Beat(1, age_ms=HOUR_MS))  # its worker died
    third = town.agents.register("builder", "claude", unique_name=True)
    assert town.agents.resolve("builder").id == third.id
    readopted = town.agents.register("builder", "claude", agent_id=third.id, unique_name=True)
    assert readopted.id == third.id  # its own name is not taken from itself


def test_registering_one_name_at_once_lets_exactly_one_agent_in(town):
    results = []

    def register():
        try:
            results.append(town.agents.register("racer", "claude", unique_name=True).id)
        except NameTaken:
            results.append(None)

    threads = [threading.Thread(target=register) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len([r for r in results if r]) == 1
    assert [a.name for a in town.agents.all()] == ["racer"]


def test_a_worker_without_a_name_registers_as_its_host_and_a_suffix(
    worker_town,
    workers,  # noqa: F811
):
    root = worker_town(idle_timeout_secs=1)
    proc = workers.start(root, env={"TINYTOWN_AGENT_NAME": ""})
    assert proc.wait_exit() == 0
    name = proc.events("agent_state")[0]["name"]
    assert re.fullmatch(re.escape(socket.gethostname()[:59]) + r"-[0-9a-f]{4}", name), name


def test_a_second_worker_with_a_live_workers_name_exits_3_saying_why(
    worker_town,
    workers,  # noqa: F811
):
    root = worker_town()
    first = workers.start(root, name="builder")
    first.wait_event("agent_state", state="idle")
    second = workers.start(root, name="builder")
    assert second.wait_exit() == 3
    (exit_line,) = second.events("exit")
    assert exit_line["reason"] == "bad_config" and "is taken by live agent" in exit_line["detail"]
    assert first.alive()


def test_a_live_looking_agent_whose_worker_is_gone_gives_up_its_name(town):
    """Its window has not ended, but nobody listens on its control channel and it registered
    well before (a worker killed and started again under its name): the name is free, and the
    old agent is dead from then on. One that listens keeps its name."""
    from datetime import timedelta

    from tinytown.core.clock import now, to_rfc3339

    listening = town.agents.register("keeper-of-name", "claude", unique_name=True)
    gone = town.agents.register("restarted", "claude", unique_name=True)
    long_ago = to_rfc3339(now() - timedelta(hours=1))
    for agent in (listening, gone):
        town.redis.hset(town.keys.agent(agent.id), "created_at", long_ago)
    subscriber = town.redis.pubsub()
    subscriber.subscribe(town.keys.control(listening.id))

    with pytest.raises(NameTaken):
        town.agents.register("keeper-of-name", "claude", unique_name=True)
    again = town.agents.register("restarted", "claude", unique_name=True)

    now_ms = town.agents.now_ms()
    assert again.id != gone.id and not town.agents.get(gone.id).alive(now_ms)
    assert town.agents.resolve("restarted").id == again.id
    subscriber.close()


def test_a_worker_killed_and_started_again_under_its_name_is_not_refused(
    worker_town,
    workers,  # noqa: F811
):
    import signal
    import time

    root = worker_town(idle_timeout_secs=0)
    first = workers.start(root, name="builder")
    first.wait_event("agent_state", state="idle")
    time.sleep(2.5)  # past two heartbeat intervals (1 s in these towns) since it registered
    first.signal(signal.SIGKILL)
    first.popen.wait(timeout=10)

    second = workers.start(root, name="builder")  # as a restart policy would, at once
    second.wait_event("agent_state", state="idle")
    assert second.agent_id != first.agent_id and second.alive()
    town = Town.connect(load_config(root, env={}))
    assert not town.agents.get(first.agent_id).alive(town.agents.now_ms())
    town.redis.close()


@pytest.fixture
def worker_town(tmp_path, redis_url):
    def make(**agent):
        return write_worker_town(tmp_path / "town", redis_url, **agent)

    return make


# --- retention --------------------------------------------------------------------------------


def stopped_agent(town, name: str, *, stopped_ms_ago: int):
    """An agent whose last heartbeat (its heartbeat window: 3 s) was this long ago, stopped."""
    agent = town.agents.register(name, "claude")
    town.agents.update(agent.id, "kill", beat=Beat(1, age_ms=stopped_ms_ago))
    return agent


def indexed(town, agent_id: str) -> bool:
    """In the agents set or any per-state index."""
    states = [town.keys.agents_in_state(s) for s in AGENT_STATES]
    return town.redis.sismember(town.keys.agents, agent_id) or any(
        town.redis.zscore(key, agent_id) is not None for key in states
    )


def test_prune_deletes_stopped_agents_past_the_retention_with_their_index_entries(town):
    old = stopped_agent(town, "old", stopped_ms_ago=2 * HOUR_MS)
    recent = stopped_agent(town, "recent", stopped_ms_ago=60_000)
    live = town.agents.register("live", "claude")
    town.redis.rpush(town.keys.inbox(old.id), "{}")

    assert town.agents.prune_stopped(HOUR_MS // 1000) == ["old"]
    assert town.agents.find(old.id) is None and not indexed(town, old.id)
    assert not town.redis.exists(town.keys.inbox(old.id))
    assert {a.name for a in town.agents.all()} == {"recent", "live"}
    assert indexed(town, recent.id) and indexed(town, live.id)


def test_the_keeper_prunes_past_the_configured_retention_and_0_keeps_them(tmp_path, redis_url):
    for retention, left in ((60, set()), (0, {"old"})):
        root = tmp_path / f"r{retention}"
        root.mkdir()
        write_town(root, redis_url, tables=f"[agent]\nretention_secs = {retention}\n")
        town = Town.connect(load_config(root, env={}))
        try:
            stopped_agent(town, "old", stopped_ms_ago=2 * 60_000)
            Keeper(town).tend()
            assert {a.name for a in town.agents.all()} == left
        finally:
            town.close()


def test_retention_secs_is_validated(tmp_path, redis_url):
    write_town(tmp_path, redis_url, tables="[agent]\nretention_secs = -1\n")
    with pytest.raises(ConfigError, match="agent.retention_secs = -1 is invalid"):
        load_config(tmp_path, env={})
    write_town(tmp_path, redis_url)
    assert load_config(tmp_path, env={}).agent.retention_secs == 86_400
