"""An idle worker's protocol: a slower heartbeat while idle, a short window while working, the
controls heard through the heartbeat, and what it all costs Redis (real worker processes)."""

from __future__ import annotations

import time

from tinytown.config import load_config
from tinytown.connection.embedded import EmbeddedServer

from .test_worker_dispatch import open_town, wait_terminal
from .worker_support import poll, worker_town, workers, write_worker_town  # noqa: F401


def window_secs(town, agent_id) -> float:
    """How far ahead of the Redis clock the agent's window ends."""
    return (town.agents.get(agent_id).alive_until - town.agents.now_ms()) / 1000


def beating_at(town, agent_id, interval_secs: int, *, timeout: float, message: str):
    """The agent's record once its last beat was at ``interval_secs``."""
    return poll(
        lambda: (a := town.agents.get(agent_id)).heartbeat_interval_secs == interval_secs and a,
        timeout=timeout,
        message=message,
    )


def idle_worker(worker_town, workers, idle_heartbeat_secs: int, working_secs: int = 1):
    """A town beating every ``working_secs`` while working and every ``idle_heartbeat_secs``
    while idle, and one worker of it, idle."""
    root = worker_town(
        heartbeat_interval_secs=working_secs,
        idle_heartbeat_secs=idle_heartbeat_secs,
        claim_timeout_secs=max(2, 3 * working_secs),  # (more than the working interval)
    )
    town = open_town(root)
    worker = workers.start(root)
    worker.wait_event("agent_state", state="idle")
    return town, worker


def test_an_idle_worker_beats_at_its_idle_cadence_and_a_working_one_at_the_short_one(
    worker_town, workers
):
    town, worker = idle_worker(worker_town, workers, 4)

    idle = beating_at(town, worker.agent_id, 4, timeout=5, message="an idle beat")
    assert 8 < window_secs(town, idle.id) <= 12  # 3 idle intervals, less what has passed

    task = town.tasks.add("[sleep 3]")
    working = poll(
        lambda: (a := town.agents.get(worker.agent_id)).state == "working" and a,
        message="the CLI to start",
    )
    # the move to working (as the CLI started) shortened the window at once: 3 working intervals
    assert working.heartbeat_interval_secs == 1 and window_secs(town, working.id) <= 3

    assert wait_terminal(town, task.id).state == "completed"
    beating_at(
        town, worker.agent_id, 4, timeout=3, message="the idle cadence again, within one tick"
    )
    assert window_secs(town, worker.agent_id) > 9
    assert worker.alive()
    town.redis.close()


def test_a_task_that_came_and_went_between_two_looks_leaves_an_idle_window(worker_town, workers):
    """The heartbeat thread looks every working interval (2 s here); a quick task starts and ends
    between two looks. Its start set the working window (3 × 2 s); the next idle beat is due a
    minute after the last one. The thread beats at its next look all the same, so the idle,
    healthy worker is never judged dead (it was, 6 s after such a task, before)."""
    town, worker = idle_worker(worker_town, workers, 60, working_secs=2)
    beating_at(town, worker.agent_id, 60, timeout=5, message="an idle beat")

    task = town.tasks.add("[print quick]")
    assert wait_terminal(town, task.id).state == "completed"

    poll(
        lambda: window_secs(town, worker.agent_id) > 150,  # 3 idle intervals, not 3 working
        timeout=2 + 3,  # the next look, and the beat's round trip
        message="an idle beat within one look of the task's end",
    )
    assert not town.agents.dead()
    town.redis.close()


def test_a_stop_flag_reaches_an_idle_worker_through_its_next_heartbeat(worker_town, workers):
    town, worker = idle_worker(worker_town, workers, 3)
    set_at = time.monotonic()

    town.redis.set(town.keys.stop(worker.agent_id), "1")  # no nudge: only a beat can see it

    assert worker.wait_exit(timeout=10) == 0
    assert worker.events("exit")[-1]["reason"] == "stop_requested"
    assert time.monotonic() - set_at < 3 + 3  # one idle interval, and the way out
    town.redis.close()


def test_a_shutdown_message_nudges_an_idle_worker_without_waiting_for_a_heartbeat(
    worker_town, workers
):
    town, worker = idle_worker(worker_town, workers, 60)
    beating_at(town, worker.agent_id, 60, timeout=5, message="the first idle beat")
    sent_at = time.monotonic()

    town.inbox.send(worker.agent_id, "", kind="shutdown")

    assert worker.wait_exit(timeout=10) == 0
    assert worker.events("exit")[-1]["reason"] == "shutdown_message"
    assert time.monotonic() - sent_at < 10  # far less than the 60 s to its next beat
    town.redis.close()


def commands(town) -> dict[str, int]:
    stats = town.redis.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


def test_an_idle_worker_sends_a_bounded_number_of_commands_per_idle_interval(tmp_path, workers):
    # The town's own Redis, so every command counted is this worker's (and this test's INFO).
    root = write_worker_town(
        tmp_path / "own", None, heartbeat_interval_secs=1, idle_heartbeat_secs=2
    )
    server = EmbeddedServer(load_config(root, env={}))
    try:
        town = open_town(root)
        worker = workers.start(root)
        worker.wait_event("agent_state", state="idle")
        time.sleep(3)  # past its start-up and first idle beat
        before, started = commands(town), time.monotonic()
        time.sleep(8)
        after, secs = commands(town), time.monotonic() - started
        sent = {k: after[k] - before.get(k, 0) for k in after if k != "info"}
        total = sum(sent.values())

        # Per 2 s idle interval: one heartbeat script (8 commands with those it runs inside);
        # per claim timeout (2 s in these towns): one read and its claim script (3), one look
        # for dead workers' entries (1) and one for silent agents and consumers (3). A worker
        # that re-armed its read, checked its controls or asked CLIENT ID every interval, or
        # PINGed its connections, would send more.
        intervals = secs / 2
        assert total <= (8 + 3 + 1 + 3) * (intervals + 1), sent
        assert sent.get("client|id", 0) == 0 and sent.get("ping", 0) == 0, sent
        assert sent.get("lrange", 0) == 0 and sent.get("get", 0) == 0, sent  # no control check
        assert worker.alive()
        town.redis.close()
    finally:
        workers.stop_all()
        server.stop()
