"""A dead worker is dead everywhere, judged by its own heartbeat interval, and its work moves on
unaided: liveness in /v1/agents, /v1/status, /api/scaling, /metrics and `tt status`; townhall's
keeper recovering a SIGKILLed worker's task with nobody calling `tt recover`."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from datetime import UTC

import pytest
import requests

from tinytown.config import load_config
from tinytown.core.liveness import Beat
from tinytown.core.scaling import ScalingInput, scaling_signal
from tinytown.keeper import Keeper
from tinytown.recovery import recover
from tinytown.store import Town
from tinytown.store.docket import Docket
from tinytown.store.dockets import is_dead
from tinytown.store.lease import Lease

from .api_support import app, client  # noqa: F401 - fixtures
from .conftest import BIN_DIR, CONFIG_ENV, free_port
from .test_metrics import parse
from .test_townhall_start import wait_health
from .test_worker_dispatch import open_town, wait_terminal
from .worker_support import poll, read_records, worker_town, workers  # noqa: F401

LONG_AGO_MS = 10 * 60 * 1000


def beating(town, name, state, *, interval=5, age_ms=0):
    """An agent in ``state`` whose last heartbeat (at its own ``interval``) was ``age_ms`` ago."""
    agent = town.agents.register(name, "fake", heartbeat_interval_secs=interval)
    town.agents.update(
        agent.id, {"idle": "ready", "working": "work"}[state], beat=Beat(interval, age_ms=age_ms)
    )
    return agent


# --- the signal, pure -------------------------------------------------------------------------


def test_dead_agents_are_counted_apart_and_queued_work_with_only_dead_agents_scales_up():
    from datetime import datetime, timezone

    s = scaling_signal(
        ScalingInput(
            town="t",
            now=datetime.now(UTC),
            pending_tasks=5,
            in_flight_tasks=1,
            agents_by_state={},
            idle_last_active=[],
            max_agents=10,
            idle_timeout_secs=300,
            dead_agents=27,
        )
    )
    assert (s["active_agents"], s["busy_agents"], s["idle_agents"], s["dead_agents"]) == (
        0,
        0,
        0,
        27,
    )
    assert s["scaling_recommendation"] == "scale_up" and s["desired_agents"] == 6


# --- every view, from a real town -------------------------------------------------------------


def test_an_agent_past_its_window_is_dead_in_every_view_and_counted_nowhere_as_live(
    client, town, run_tt
):
    beating(town, "alive-idle", "idle")
    beating(town, "alive-busy", "working")
    corpse = beating(town, "corpse", "working", age_ms=LONG_AGO_MS)
    town.tasks.add("queued")

    agents = {a["name"]: a for a in client.get("/v1/agents").get_json()["agents"]}
    assert agents["corpse"]["alive"] is False and agents["corpse"]["state"] == "Working"
    assert (
        agents["corpse"]["heartbeat_age_secs"] >= 600
        and agents["corpse"]["heartbeat_interval_secs"] == 5
    )
    assert agents["alive-busy"]["alive"] is True and agents["alive-idle"]["alive"] is True
    status = {a["name"]: a for a in client.get("/v1/status").get_json()["agents"]}
    assert status["corpse"]["alive"] is False

    s = client.get("/api/scaling").get_json()
    assert (s["active_agents"], s["busy_agents"], s["idle_agents"], s["dead_agents"]) == (
        2,
        1,
        1,
        1,
    )

    metrics = parse(client.get("/metrics").get_data(as_text=True))
    assert metrics['tinytown_agents_total{state="dead"}'] == 1
    assert metrics['tinytown_agents_total{state="working"}'] == 1

    out = run_tt("status").stdout
    line = next(row for row in out.splitlines() if "corpse" in row)
    assert "dead (was working, no heartbeat for" in line and corpse.id in line
    assert any("alive-busy" in row and " working " in row for row in out.splitlines())


def test_a_town_whose_only_agents_died_holding_work_asks_for_workers(client, town):
    """27 dead agents were once counted busy and 5 queued tasks got "steady"."""
    for i in range(3):
        beating(town, f"dead-{i}", "working", age_ms=LONG_AGO_MS)
    for _ in range(5):
        town.tasks.add("queued")
    s = client.get("/api/scaling").get_json()
    assert (s["active_agents"], s["busy_agents"], s["dead_agents"]) == (0, 0, 3)
    assert s["scaling_recommendation"] == "scale_up" and s["desired_agents"] == 5


# --- a Redis that has just started -------------------------------------------------------------


def test_nobody_is_judged_dead_until_redis_has_been_up_for_one_window(tmp_path):
    """After a restart every live agent's window may have run out while it could not beat: no
    judge (the keeper's recovery, an idle worker's take-over) calls anyone dead until Redis has
    been up for one dead-after window of the town's interval (1 s here: 3 s)."""
    from tinytown.connection.embedded import EmbeddedServer

    from .worker_support import write_worker_town

    root = write_worker_town(tmp_path / "fresh", None, heartbeat_interval_secs=1)
    server = EmbeddedServer(load_config(root, env={}))
    try:
        server.ensure_running()  # a fresh server: up for less than 3 s
        town = open_town(root)
        gone = beating(town, "gone", "working", interval=1, age_ms=LONG_AGO_MS)
        gone_docket = Docket(town, gone.id)
        gone_docket.ensure_groups()
        task = town.tasks.add("x")
        gone_docket.read(100)  # it holds the task's entry, idle long past the claim timeout
        held = town.redis.xpending_range(town.keys.docket, "workers", "-", "+", 10)
        town.redis.xclaim(
            town.keys.docket, "workers", gone.id, 0, [held[0]["message_id"]], idle=60_000
        )
        looker = Docket(town, town.agents.register("looker", "fake").id)

        assert not town.agents.settled()
        assert town.agents.dead() == []
        assert looker.reclaim_one() is None
        # nor townhall's keeper (recover), which once took a live worker's task here
        assert recover(town)["reclaimed"] == 0
        assert town.tasks.get(task.id).state == "running"

        poll(town.agents.settled, timeout=6, message="Redis up for 3 s")
        assert [a.id for a in town.agents.dead()] == [gone.id]
        taken = looker.reclaim_one()
        assert taken is not None and taken.reclaimed_from == gone.id
        for d in (gone_docket, looker):
            d.close()
        town.redis.close()
    finally:
        server.stop()


# --- the agent's own interval -----------------------------------------------------------------


def test_death_is_judged_by_the_agents_own_interval_not_the_lookers(tmp_path, redis_url):
    """A worker configured with 1 s once removed the consumer of a live worker configured with
    5 s. Here the looker's town says 1 s (dead after 3 s); the other beat 4 s ago at 5 s."""
    from .conftest import write_town

    town = Town.connect(
        load_config(
            write_town(
                tmp_path,
                redis_url,
                tables="[agent]\nheartbeat_interval_secs = 1\nclaim_timeout_secs = 2\n",
            ),
            env={},
        )
    )
    slow = beating(town, "slow", "idle", interval=5, age_ms=4_000)
    slow_docket = Docket(town, slow.id)
    slow_docket.ensure_groups()
    town.tasks.add("x")
    slow_docket.read(100)  # slow holds the task's entry
    town.redis.xclaim(
        town.keys.docket,
        "workers",
        slow.id,
        0,
        [
            e["message_id"]
            for e in town.redis.xpending_range(town.keys.docket, "workers", "-", "+", 10)
        ],
        idle=60_000,
        justid=True,
    )
    quick = town.agents.register("quick", "fake")  # the town's 1 s
    looker = Docket(town, quick.id)

    assert not is_dead(town.agents.get(slow.id), town.agents.now_ms())
    assert looker.reclaim_one() is None  # its entry stays with it
    town.redis.xgroup_createconsumer(town.keys.docket, "workers", "idle-slow")
    assert slow.id not in looker.forget_dead_consumers(0)
    assert town.agents.dead() == []
    town.redis.close()


# --- the keeper ---------------------------------------------------------------------------------


def test_the_keeper_stops_a_dead_agent_and_returns_its_task_under_the_lease(town):
    agent = beating(town, "doomed", "idle", interval=1)
    docket = Docket(town, agent.id)
    docket.ensure_groups()
    task = town.tasks.add("half done")
    docket.read(100)
    town.agents.update(agent.id, "work", beat=Beat(1, age_ms=LONG_AGO_MS))
    keeper = Keeper(town)

    other = Lease(town.redis, town.keys.keeper_lease, 60_000)
    assert other.acquire()  # another townhall process holds the duty
    keeper.tend()
    assert town.agents.get(agent.id).state == "working"  # not this process's turn
    other.release()

    wait = keeper.tend()
    assert town.agents.get(agent.id).state == "stopped"
    assert town.tasks.get(task.id).state == "pending"
    assert (
        town.redis.xpending(town.keys.docket, "workers")["pending"] == 0
    )  # the dead one's entry acknowledged …
    assert town.redis.xlen(town.keys.docket) == 2  # … after a fresh one went on the docket
    assert (
        wait == 3 * town.config.agent.heartbeat_interval_secs
    )  # nothing live left: one window of the town's interval


def test_the_keeper_sleeps_until_the_next_agent_could_die(town):
    beating(town, "a", "idle", interval=5, age_ms=5_000)
    wait = Keeper(town).tend()
    assert 8.0 < wait <= 10.2  # dead 3 × 5 s after its beat, which was 5 s ago


# --- end to end: a SIGKILLed worker's task moves on with nobody calling tt recover ---------------


@pytest.fixture
def townhall(tmp_path):
    procs = []

    def start(root):
        port = free_port()
        env = {k: v for k, v in os.environ.items() if k not in CONFIG_ENV}
        env.update(TINYTOWN_TOWN_DIR=str(root), TINYTOWN_REST_PORT=str(port))
        proc = subprocess.Popen(
            [str(BIN_DIR / "gunicorn"), "-c", "python:tinytown.gunicorn_conf", "townhall:app"],
            cwd=root,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        wait_health(proc, port)
        return f"http://127.0.0.1:{port}", proc

    yield start
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def test_a_sigkilled_workers_task_is_recovered_by_townhall_alone(
    worker_town, workers, townhall, tmp_path
):
    root = worker_town(heartbeat_interval_secs=1, claim_timeout_secs=30)
    town = open_town(root)
    url, proc = townhall(root)
    records = tmp_path / "runs.jsonl"
    doomed = workers.start(root, name="doomed")
    task = town.tasks.add(f"[record {records}] [sleep-first 60] [print second try]")
    doomed.wait_event("cli_started", task=task.id)

    os.kill(doomed.pid, signal.SIGKILL)
    killed_at = time.monotonic()

    def agent_view():
        return next(
            a
            for a in requests.get(f"{url}/v1/agents", timeout=5).json()["agents"]
            if a["name"] == "doomed"
        )

    poll(
        lambda: agent_view()["state"] == "Stopped",
        timeout=15,
        message="townhall's keeper to stop the dead agent",
    )
    assert time.monotonic() - killed_at < 10  # dead after 3 s, recovered within a keeper wake-up
    assert town.tasks.get(task.id).state == "pending"
    s = requests.get(f"{url}/api/scaling", timeout=5).json()
    assert (
        s["scaling_recommendation"] == "scale_up"
        and s["active_agents"] == 0
        and s["busy_agents"] == 0
    )

    rescuer = workers.start(root, name="rescuer")  # what the scaler would start
    done = wait_terminal(town, task.id, timeout=30)
    assert (
        done.state == "completed"
        and done.assigned_to == rescuer.agent_id
        and "second try" in done.result
    )
    for rec in read_records(records):  # the dead worker's CLI is gone (its leash stopped it)
        if rec.get("event") == "start" and rec.get("attempt") == "1":
            poll(
                lambda: _gone(int(rec["pid"])),
                timeout=10,
                message="the killed worker's CLI to stop",
            )
    assert proc.poll() is None


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return open(f"/proc/{pid}/stat").read().split()[2] == "Z"
