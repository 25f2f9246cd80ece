"""A worker's lifecycle through real processes: idle exit, drains, shutdown, exit codes, Redis restart."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid

from tinytown.config import load_config
from tinytown.connection.embedded import EmbeddedServer
from tinytown.core.errors import ExitStatus

from .test_worker_dispatch import acked, open_town, pending_entries, wait_terminal
from .worker_support import (
    in_process_worker,
    poll,
    read_records,
    worker_town,
    workers,
    write_worker_town,
)  # noqa: F401


def state_changes(worker):
    return [e["state"] for e in worker.events("agent_state")]


def test_an_idle_worker_exits_0_after_the_idle_timeout_through_draining_and_stopped(
    worker_town, workers
):
    root = worker_town(idle_timeout_secs=1)
    town = open_town(root)
    worker = workers.start(root)

    assert worker.wait_exit(timeout=15) == ExitStatus.SUCCESS
    assert state_changes(worker) == ["starting", "idle", "draining", "stopped"]
    assert worker.events("exit")[-1]["reason"] == "idle_timeout"
    assert town.agents.get(worker.agent_id).state == "stopped"


def test_the_idle_timer_restarts_after_each_task(worker_town, workers):
    root = worker_town(idle_timeout_secs=2)
    town = open_town(root)
    worker = workers.start(root)
    worker.wait_event("agent_state", state="idle")
    task = town.tasks.add("[sleep 1.5]")
    assert wait_terminal(town, task.id).state == "completed"
    assert worker.alive()  # 1.5 s of work did not count as idle time
    assert worker.wait_exit(timeout=15) == 0
    assert worker.events("exit")[-1]["reason"] == "idle_timeout"


def test_sigterm_lets_a_running_task_finish_then_exits_0(worker_town, workers, tmp_path):
    root = worker_town(drain_timeout_secs=10)
    town = open_town(root)
    worker = workers.start(root)
    worker.wait_event("agent_state", state="idle")
    task = town.tasks.add("[sleep 1] [print finished in time]")
    worker.wait_event("cli_started", task=task.id)

    worker.signal(signal.SIGTERM)

    assert worker.wait_exit(timeout=15) == 0
    done = town.tasks.get(task.id)
    assert done.state == "completed" and "finished in time" in done.result
    assert state_changes(worker)[-3:] == ["working", "draining", "stopped"]
    assert worker.events("exit")[-1]["reason"] == "signal_sigterm"
    assert pending_entries(town, town.keys.docket) == 0


def test_sigterm_past_the_drain_timeout_stops_the_cli_and_leaves_the_task_for_another_worker(
    worker_town, workers, tmp_path
):
    root = worker_town(drain_timeout_secs=1, claim_timeout_secs=2)
    town = open_town(root)
    records = tmp_path / "runs.jsonl"
    first = workers.start(root, name="first")
    first.wait_event("agent_state", state="idle")
    task = town.tasks.add(f"[record {records}] [sleep-first 60] [print second attempt]")
    first.wait_event("cli_started", task=task.id)

    first.signal(signal.SIGTERM)

    assert first.wait_exit(timeout=15) == 0
    assert first.events("task_handed_back")[0]["task"] == task.id
    held = town.redis.xpending(town.keys.docket, "workers")
    assert (
        held["pending"] == 1 and held["consumers"][0]["name"] == first.agent_id
    )  # left for reclaim
    assert town.tasks.get(task.id).state == "running"
    assert town.agents.get(first.agent_id).state == "stopped"

    second = workers.start(root, name="second")
    done = wait_terminal(town, task.id, timeout=20)
    assert done.state == "completed" and done.assigned_to == second.agent_id
    assert "second attempt" in done.result
    assert [r["attempt"] for r in read_records(records) if r["event"] == "start"] == ["1", "2"]


def test_a_directed_task_past_the_drain_timeout_goes_back_to_the_backlog_at_once(
    worker_town, workers, tmp_path
):
    root = worker_town(drain_timeout_secs=1, claim_timeout_secs=60)  # reclaim would take a minute
    town = open_town(root)
    records = tmp_path / "runs.jsonl"
    first = workers.start(root, name="first")
    first.wait_event("agent_state", state="idle")
    task = town.tasks.add(
        f"[record {records}] [sleep-first 60] [print second attempt]", agent_id=first.agent_id
    )
    first.wait_event("cli_started", task=task.id)

    first.signal(signal.SIGTERM)

    assert first.wait_exit(timeout=15) == 0
    assert first.events("task_handed_back")[0]["to"] == "backlog"
    assert pending_entries(town, town.keys.agent_docket(first.agent_id)) == 0
    second = workers.start(root, name="second")
    done = wait_terminal(town, task.id, timeout=15)
    assert done.state == "completed" and done.assigned_to == second.agent_id and done.attempts == 2


def test_a_second_signal_exits_at_once(worker_town, workers):
    root = worker_town(drain_timeout_secs=30)
    town = open_town(root)
    worker = workers.start(root)
    worker.wait_event("agent_state", state="idle")
    task = town.tasks.add("[sleep 60]")
    worker.wait_event("cli_started", task=task.id)

    worker.signal(signal.SIGTERM)
    worker.wait_event("draining", task=task.id)
    worker.signal(signal.SIGTERM)

    assert worker.wait_exit(timeout=5) == ExitStatus.INTERRUPTED
    assert worker.events("exit")[-1]["reason"] == "second_signal"


def test_a_shutdown_message_drains_and_exits_0(worker_town, workers, run_tt):
    root = worker_town()
    worker = workers.start(root, name="listener")
    worker.wait_event("agent_state", state="idle")
    town = open_town(root)
    town.inbox.send(worker.agent_id, "please keep this note", kind="info")

    sent = run_tt("send", "listener", "--kind", "shutdown", cwd=root)

    assert sent.returncode == 0, sent.stderr
    assert worker.wait_exit(timeout=10) == 0
    assert worker.events("exit")[-1]["reason"] == "shutdown_message"
    left = [m["type"] for m in town.inbox.peek(worker.agent_id)[0]]
    assert left == ["informational"]  # other messages are not consumed by the exit


def test_a_stop_from_outside_is_honoured(worker_town, workers):
    root = worker_town()
    town = open_town(root)
    worker = workers.start(root)
    worker.wait_event("agent_state", state="idle")
    town.redis.set(town.keys.stop(worker.agent_id), "1")
    assert worker.wait_exit(timeout=10) == 0
    assert worker.events("exit")[-1]["reason"] == "stop_requested"


def test_a_paused_worker_takes_no_work_until_resumed(worker_town, workers):
    root = worker_town()
    town = open_town(root)
    worker = workers.start(root)
    worker.wait_event("agent_state", state="idle")
    town.agents.update(worker.agent_id, "pause")
    # the worker notices the pause at its next check (≤ 1 heartbeat interval)
    worker.wait_event("agent_paused", timeout=5)
    task = town.tasks.add("[print after the pause]")
    assert not poll_quiet(lambda: town.tasks.get(task.id).state != "pending", secs=1.5)

    town.agents.update(worker.agent_id, "resume")

    assert wait_terminal(town, task.id).state == "completed"


def test_a_worker_paused_while_it_waits_on_the_docket_does_not_take_what_arrives(
    worker_town, workers
):
    root = worker_town()
    town = open_town(root)
    worker = workers.start(root)
    worker.wait_event("agent_state", state="idle")
    town.agents.update(worker.agent_id, "pause")
    task = town.tasks.add(
        "[print arrives before the worker looked at its state]"
    )  # no wait: the read takes it in

    worker.wait_event("agent_paused", timeout=5)
    assert not poll_quiet(lambda: town.tasks.get(task.id).state != "pending", secs=1.5)
    assert town.tasks.get(task.id).attempts == 0
    town.agents.update(worker.agent_id, "resume")

    assert wait_terminal(town, task.id).state == "completed"


def poll_quiet(check, secs):
    """True if ``check`` becomes true within ``secs`` (for asserting that something does NOT happen)."""
    import time

    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


def test_a_worker_adopts_the_agent_id_it_is_given_and_resumes_what_it_held(
    worker_town, workers, tmp_path
):
    root = worker_town()
    town = open_town(root)
    agent_id = str(uuid.uuid4())
    town.agents.register("keeper", "fake", agent_id=agent_id)
    task = town.tasks.add("[print resumed]")
    # A previous life of this agent read the entry and died before acknowledging it.
    town.redis.xreadgroup("workers", agent_id, {town.keys.docket: ">"}, count=1)

    worker = workers.start(root, name="keeper", agent_id=agent_id)

    assert worker.agent_id == agent_id
    assert wait_terminal(town, task.id).state == "completed"
    assert worker.wait_event("entry_resumed", task=task.id)
    assert acked(town, town.keys.docket)


def test_bad_configuration_exits_3(tmp_path, redis_url, workers):
    root = write_worker_town(tmp_path / "bad", redis_url, idle_timeout_secs=-1)
    worker = workers.start(root)
    assert worker.wait_exit(timeout=10) == ExitStatus.CONFIG_ERROR
    exit_line = worker.events("exit")[-1]
    assert exit_line["reason"] == "bad_config" and "idle_timeout_secs" in exit_line["detail"]


def test_a_worker_outside_any_town_exits_3_and_starts_no_redis_of_its_own(tmp_path, workers):
    elsewhere = tmp_path / "not-a-town"
    elsewhere.mkdir()
    worker = workers.start(elsewhere)
    assert worker.wait_exit(timeout=10) == ExitStatus.CONFIG_ERROR
    detail = worker.events("exit")[-1]["detail"]
    assert f"no town in {elsewhere}" in detail and "REDIS_URL" in detail
    assert list(elsewhere.iterdir()) == []  # no .tt/, no Redis started there


def test_an_idle_worker_recovers_when_redis_comes_back_empty(tmp_path, workers):
    # A town of its own: its data is wiped, as after a restart without persistence.
    root = write_worker_town(tmp_path / "wiped", None, heartbeat_interval_secs=1)
    server = EmbeddedServer(load_config(root, env={}))
    try:
        town = open_town(root)
        worker = workers.start(root)
        worker.wait_event("agent_state", state="idle")

        town.redis.flushall()

        worker.wait_event("agent_record_missing", timeout=10)  # registers again, same id
        task = town.tasks.add("[print after the wipe]")
        done = wait_terminal(town, task.id, timeout=15)
        assert done.state == "completed" and done.assigned_to == worker.agent_id
        assert worker.alive()
        town.redis.close()
    finally:
        workers.stop_all()
        server.stop()


def test_unreachable_redis_exits_4_after_the_retry_budget(tmp_path, workers):
    from .conftest import free_port

    root = write_worker_town(tmp_path / "nowhere", f"redis://127.0.0.1:{free_port()}/0")
    worker = workers.start(root, args=("--redis-retry-secs", "1"))
    assert worker.wait_exit(timeout=15) == ExitStatus.REDIS_UNAVAILABLE
    assert worker.events("exit")[-1]["reason"] == "redis_unreachable"


def test_an_idle_worker_survives_a_restart_of_the_towns_own_redis(tmp_path, workers):
    # A town of its own (no [redis].url): its embedded server on its own socket, not the session's.
    root = write_worker_town(tmp_path / "own", None)
    config = load_config(root, env={})
    server = EmbeddedServer(config)
    try:
        town = open_town(root)
        worker = workers.start(root)
        worker.wait_event("agent_state", state="idle")

        server.stop()  # saves its snapshot, as a restart would
        worker.wait_event("redis_unavailable")
        server.ensure_running()
        worker.wait_event("redis_reconnected", timeout=20)

        town = open_town(root)
        task = town.tasks.add("[print after the restart]")
        assert wait_terminal(town, task.id).state == "completed"
        assert worker.alive()
        town.redis.close()
    finally:
        workers.stop_all()
        server.stop()


def test_a_task_whose_cli_a_stop_came_before_goes_back_at_once_uncounted(worker_town):
    """A stop seen after the claim but before the CLI starts (while a workspace is made, or a
    dead holder's CLI stopped): no attempt happened. It once used one up and left the entry for
    a take-over after claim_timeout_secs, so a task with max_attempts = 1 failed unrun."""
    root = worker_town(max_attempts=1)
    town = open_town(root)
    with in_process_worker(root) as worker:
        task = town.tasks.add("stopped before it started")
        delivery = worker.next_delivery()
        assert delivery.claim.task.id == task.id and town.tasks.get(task.id).attempts == 1
        worker.stopping = "signal"  # … arrives while the task's workspace is made

        worker.work_on(delivery.entry, delivery.claim)

        assert worker.held is None
    back = town.tasks.get(task.id)
    assert (back.state, back.attempts, back.assigned_to) == ("pending", 0, None)
    assert town.redis.lrange(town.keys.backlog, 0, -1) == [task.id]
    assert pending_entries(town, town.keys.docket) == 0


def test_a_task_the_read_took_just_as_a_stop_signal_came_goes_back_at_once_uncounted(worker_town):
    """The serve loop's answer to a signal racing the read, driven in-process for determinism."""
    root = worker_town()
    town = open_town(root)
    with in_process_worker(root) as worker:
        task = town.tasks.add("arrives with the signal")
        worker.stopping = "signal"
        delivery = worker.next_delivery()
        assert (
            delivery.claim.task.id == task.id and town.tasks.get(task.id).attempts == 1
        )  # the read took it

        worker.undo_claim(delivery)

    back = town.tasks.get(task.id)
    assert (back.state, back.attempts, back.assigned_to, back.started_at) == (
        "pending",
        0,
        None,
        None,
    )
    assert town.redis.lrange(town.keys.backlog, 0, -1) == [task.id]
    assert pending_entries(town, town.keys.docket) == 0  # its entry acknowledged …
    assert [e[1]["task_id"] for e in town.redis.xrange(town.keys.docket)] == [
        task.id,
        task.id,
    ]  # … a fresh one queued


def test_an_idle_worker_with_default_settings_is_quiet_for_a_minute(tmp_path, redis_url, workers):
    """Default intervals (5 s heartbeat and blocking read, 60 s sweeps): after start-up, an idle
    worker writes no line for 60 s — no read timeouts, reconnects or Redis errors."""
    import time

    root = tmp_path / "quiet"
    root.mkdir()
    (root / "tinytown.toml").write_text(
        f'name = "q-{uuid.uuid4().hex[:8]}"\n[redis]\nurl = "{redis_url}"\n'
    )
    worker = workers.start(root)
    worker.wait_event("agent_state", state="idle")
    settled = len(worker.events())
    time.sleep(62)
    assert worker.alive()
    assert worker.events()[settled:] == []


def test_a_running_worker_keeps_its_health_file_fresh_after_each_heartbeat(
    worker_town, workers, tmp_path
):
    health = tmp_path / "worker.health"
    root = worker_town(heartbeat_interval_secs=1)
    worker = workers.start(root, env={"TINYTOWN_HEALTH_FILE": str(health)})
    worker.wait_event("agent_state", state="idle")

    first = poll(
        lambda: health.exists() and health.stat().st_mtime, message="the health file to be written"
    )
    later = poll(
        lambda: health.stat().st_mtime > first and health.stat().st_mtime,
        timeout=5,
        message="the next heartbeat to touch the health file",
    )
    check = subprocess.run(
        [sys.executable, "-m", "tinytown.worker.health_file", str(health)],
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert later > first and worker.alive()
    # judged by the longer of its cadences (idle_heartbeat_secs, 2 in these towns), not the 1 s
    # it beats at while working
    assert json.loads(health.read_text())["heartbeat_interval_secs"] == 2
    assert check.returncode == 0, check.stdout
    assert worker.events("health_file_failed") == []


def test_an_agent_paused_while_its_cli_runs_stays_paused_and_lets_go_of_the_task(
    worker_town, workers
):
    """The task finishes; the pause holds (no new work), and the record stops naming the task
    and the CLI that ended (the status page would show it working on it for ever)."""
    root = worker_town()
    town = open_town(root)
    worker = workers.start(root)
    worker.wait_event("agent_state", state="idle")
    task = town.tasks.add("[sleep 1.5][print done]")
    worker.wait_event("cli_started", task=task.id)
    town.agents.update(worker.agent_id, "pause")
    assert wait_terminal(town, task.id).state == "completed"

    def let_go() -> bool:
        agent = town.agents.get(worker.agent_id)
        return agent.state == "paused" and not agent.current_task

    assert poll_quiet(let_go, secs=10)
    assert not town.redis.hexists(town.keys.agent(worker.agent_id), "cli_pgid")
    after = town.tasks.add("[print after the pause]")
    assert not poll_quiet(lambda: town.tasks.get(after.id).state != "pending", secs=1.5)
    town.agents.update(worker.agent_id, "resume")
    assert wait_terminal(town, after.id).state == "completed"
