"""Failures through real worker processes: retries, max_attempts, a killed worker, task timeout."""

from __future__ import annotations

import functools
import os
import signal
import time

from tinytown.core.clock import now, to_rfc3339
from tinytown.recovery import return_held_entries
from tinytown.store import control
from tinytown.store.task_tokens import new_token
from tinytown.store.worker import RoundEnd

from .test_worker_dispatch import acked, open_town, wait_terminal
from .worker_support import (
    in_process_worker,
    kill_recorded_groups,
    poll,
    process_gone,
    read_records,
    worker_town,
    workers,
)  # noqa: F401


def assert_cli_group_stopped(records) -> None:
    """The recorded CLI and its child are gone within 5 s."""
    runs = read_records(records)
    cli = next(r["pid"] for r in runs if r["event"] == "start")
    child = next(r["child_pid"] for r in runs if r["event"] == "child")
    assert poll(
        lambda: process_gone(cli) and process_gone(child),
        timeout=5,
        message="the CLI's group to be stopped",
    )


def starts(records):
    return [r for r in read_records(records) if r["event"] == "start"]


def test_a_cli_the_shell_cannot_find_fails_saying_so(worker_town, workers):
    root = worker_town(max_attempts=1)
    with open(root / "tinytown.toml", "a") as toml:  # a CLI this machine does not have, named
        # behind a shell word (a plain name is judged before the start: the test below)
        toml.write('\n[agent_clis.missing]\ncommand = "exec tinytown-no-such-cli --go"\n')
    town = open_town(root)
    workers.start(root)

    task = town.tasks.add("anything", cli="missing")
    done = wait_terminal(town, task.id)

    assert done.state == "failed"
    assert "exited with code 127 (the shell found no such command" in done.result
    tail = done.result.splitlines()[-1]  # the shell's own line ("…: not found"), from the tail
    assert "tinytown-no-such-cli" in tail and "not found" in tail


def test_a_failing_task_is_retried_then_failed_with_the_reason_and_stays_listed(
    worker_town, workers, tmp_path
):
    root = worker_town(max_attempts=3)
    town = open_town(root)
    records = tmp_path / "runs.jsonl"
    workers.start(root)

    task = town.tasks.add(f"[record {records}] [print boom] [exit 2]")
    done = wait_terminal(town, task.id)

    assert done.state == "failed" and done.attempts == 3
    assert "failed after 3 attempts" in done.result and "exited with code 2" in done.result
    assert "boom" in done.result  # the output's tail is kept
    (failed,) = [e for e in town.events.read(limit=1000) if e["event_type"] == "task_failed"]
    assert failed["reason"].endswith("exited with code 2 | boom")  # the CLI's last word too
    assert [r["attempt"] for r in starts(records)] == ["1", "2", "3"]
    assert task.id in town.redis.zrange(town.keys.tasks_in_state("failed"), 0, -1)
    assert acked(town, town.keys.docket)


def test_a_task_that_fails_once_completes_on_its_second_attempt(worker_town, workers, tmp_path):
    root = worker_town(max_attempts=3)
    town = open_town(root)
    workers.start(root)
    task = town.tasks.add("[exit-first 1] [print second time lucky]")
    done = wait_terminal(town, task.id)
    assert (done.state, done.attempts) == ("completed", 2)
    assert "second time lucky" in done.result


def test_a_directed_task_is_retried_on_the_same_agent(worker_town, workers, tmp_path):
    root = worker_town(max_attempts=2)
    town = open_town(root)
    records = tmp_path / "runs.jsonl"
    target, other = workers.start(root, name="target"), workers.start(root, name="other")
    other.wait_event("agent_state", state="idle")
    task = town.tasks.add(f"[record {records}] [exit 1]", agent_id=target.agent_id)
    assert wait_terminal(town, task.id).state == "failed"
    assert {r["agent"] for r in starts(records)} == {target.agent_id}
    assert len(starts(records)) == 2


def test_what_the_cli_reports_itself_is_kept(worker_town, workers, tmp_path):
    root = worker_town(max_attempts=3)
    town = open_town(root)
    records = tmp_path / "runs.jsonl"
    workers.start(root)

    completed = town.tasks.add("[complete] [exit 0]")
    gave_up = town.tasks.add(f"[record {records}] [fail-via-api] [exit 1]")

    assert wait_terminal(town, completed.id).result == "reported by the fake CLI"
    failed = wait_terminal(town, gave_up.id)
    assert (failed.state, failed.result) == ("failed", "the fake CLI gave up")
    assert len(starts(records)) == 1  # reported failed: not retried


def test_a_worker_killed_mid_task_loses_no_task(worker_town, workers, tmp_path):
    root = worker_town(claim_timeout_secs=2, heartbeat_interval_secs=1)
    town = open_town(root)
    records = tmp_path / "runs.jsonl"
    doomed = workers.start(root, name="doomed")
    doomed.wait_event("agent_state", state="idle")
    victim = town.tasks.add(f"[record {records}] [sleep-first 30] [print finished]")
    doomed.wait_event("task_started", task=victim.id)
    others = [town.tasks.add(f"[record {records}] [print other {i}]") for i in range(5)]

    os.kill(doomed.pid, signal.SIGKILL)  # the worker dies …
    doomed.wait_exit()
    kill_recorded_groups(records)  # … and its CLI with it, as when a container dies
    survivor = workers.start(root, name="survivor")

    for t in [victim, *others]:
        assert wait_terminal(town, t.id, timeout=30).state == "completed"
    done = town.tasks.get(victim.id)
    assert done.assigned_to == survivor.agent_id and done.attempts == 2
    assert "finished" in done.result
    reclaimed = survivor.wait_event("entry_reclaimed", task=victim.id)
    assert reclaimed["holder"] == doomed.agent_id
    assert acked(town, town.keys.docket)
    # the dead consumer leaves the group once it holds nothing
    poll(
        lambda: (
            doomed.agent_id
            not in {c["name"] for c in town.redis.xinfo_consumers(town.keys.docket, "workers")}
        ),
        timeout=10,
        message="dead consumer removal",
    )


def test_task_timeout_stops_the_whole_process_group_and_counts_as_a_failed_attempt(
    worker_town, workers, tmp_path
):
    root = worker_town(task_timeout_secs=1, max_attempts=1)
    town = open_town(root)
    records = tmp_path / "runs.jsonl"
    workers.start(root)

    task = town.tasks.add(f"[record {records}] [child] [ignore-term] [sleep 60]")
    done = wait_terminal(town, task.id, timeout=20)

    assert done.state == "failed" and "timed out after 1 s" in done.result
    child = next(r["child_pid"] for r in read_records(records) if r["event"] == "child")
    assert poll(lambda: process_gone(child), timeout=5, message="the CLI's child to be killed")


def long_running_task(worker_town, workers, tmp_path):
    """A worker (1 s heartbeats) running a task whose CLI has a child and sleeps 60 s."""
    root = worker_town(heartbeat_interval_secs=1)
    town = open_town(root)
    records = tmp_path / "runs.jsonl"
    worker = workers.start(root)
    task = town.tasks.add(f"[record {records}] [child] [sleep 60]")
    worker.wait_event("task_started", task=task.id)
    return town, worker, task, records


def test_cancelling_a_running_task_stops_its_cli_and_the_worker_goes_on(
    worker_town, workers, tmp_path
):
    town, worker, task, records = long_running_task(worker_town, workers, tmp_path)

    town.tasks.cancel(task.id, "not needed any more")

    finished = worker.wait_event("task_finished", task=task.id, timeout=10)
    assert finished["outcome"] == "kept:cancelled"
    assert_cli_group_stopped(records)
    assert town.tasks.get(task.id).state == "cancelled"  # the worker does not overwrite it
    assert acked(town, town.keys.docket)
    nxt = town.tasks.add(f"[record {records}]")
    assert wait_terminal(town, nxt.id).state == "completed"


def test_a_worker_whose_task_went_to_another_run_stops_its_cli_and_writes_nothing_over_it(
    worker_town, workers, tmp_path
):
    # What a keeper does to a worker it judged dead (after a Redis restart it once did so to
    # live ones): the task back to the queue, the entry acknowledged. The live worker's CLI
    # used to run on beside the next run; now its heartbeat sees it and stops the CLI.
    town, worker, task, records = long_running_task(worker_town, workers, tmp_path)

    assert return_held_entries(town, town.keys.docket, worker.agent_id) == 1
    town.tasks.cancel(task.id, "no second run here")  # (its fresh entry would start one)

    lost = worker.wait_event("entry_lost", task=task.id, timeout=10)
    assert lost["cli_stopped"] == "True"
    assert worker.wait_event("cli_stopping", task=task.id)["reason"] == "task_taken_over"
    assert_cli_group_stopped(records)
    finished = worker.wait_event("task_finished", task=task.id, timeout=10)
    assert finished["outcome"].startswith("kept:")
    assert town.tasks.get(task.id).state == "cancelled"


def test_a_directed_task_of_a_killed_worker_goes_back_to_the_backlog_for_others(
    worker_town, workers, tmp_path
):
    root = worker_town(claim_timeout_secs=2, heartbeat_interval_secs=1)
    town = open_town(root)
    records = tmp_path / "runs.jsonl"
    doomed = workers.start(root, name="doomed")
    doomed.wait_event("agent_state", state="idle")
    task = town.tasks.add(
        f"[record {records}] [sleep-first 30] [print finished]", agent_id=doomed.agent_id
    )
    doomed.wait_event("task_started", task=task.id)
    os.kill(doomed.pid, signal.SIGKILL)
    doomed.wait_exit()
    kill_recorded_groups(records)

    survivor = workers.start(root, name="survivor")

    done = wait_terminal(town, task.id, timeout=30)
    assert (
        done.state == "completed" and done.assigned_to == survivor.agent_id and done.attempts == 2
    )
    assert survivor.wait_event("directed_tasks_returned")["count"] == "1"


def test_a_claim_whose_reply_was_lost_runs_once_as_the_same_attempt(worker_town):
    """The read's claim happens in Redis; if its reply is lost, the worker resumes that task
    without counting a second attempt (with max_attempts = 1 a second count would fail it).
    Driven in-process: a lost reply cannot be produced on demand through a real connection."""
    root = worker_town(max_attempts=1)
    town = open_town(root)
    with in_process_worker(root) as worker:
        task = town.tasks.add("[print ran once]")
        worker.docket.read(1000)  # claimed in Redis; its reply never reaches the worker loop
        assert (town.tasks.get(task.id).state, town.tasks.get(task.id).attempts) == ("running", 1)

        worker.resume_held_entries(lost_reply=True)

    done = town.tasks.get(task.id)
    assert (done.state, done.attempts) == ("completed", 1) and "ran once" in done.result
    assert acked(town, town.keys.docket)


def running_cli(root, town, workers, records):
    """A worker ("doomed") running a long task whose CLI has a child: (worker, task, leash pid,
    the CLI's start record, the child's pid)."""
    doomed = workers.start(root, name="doomed")
    doomed.wait_event("agent_state", state="idle")
    task = town.tasks.add(f"[record {records}] [child] [sleep-first 60] [print finished]")
    leash = int(doomed.wait_event("cli_started", task=task.id)["leash_pid"])
    child = poll(
        lambda: next((r["child_pid"] for r in read_records(records) if r["event"] == "child"), None)
    )
    cli = next(r for r in read_records(records) if r["event"] == "start")
    return doomed, task, leash, cli, child


def test_a_cli_left_running_by_a_killed_worker_is_stopped_before_its_task_is_taken_over(
    worker_town, workers, tmp_path
):
    root = worker_town(claim_timeout_secs=2, heartbeat_interval_secs=1)
    town = open_town(root)
    records = tmp_path / "runs.jsonl"
    doomed, victim, leash, cli, child = running_cli(root, town, workers, records)
    try:
        os.kill(leash, signal.SIGKILL)  # its leash lost too (say, both killed at once) …
        os.kill(
            doomed.pid, signal.SIGKILL
        )  # … and outside a container nothing takes its CLI down with it
        doomed.wait_exit()
        assert not process_gone(cli["pid"]) and not process_gone(child)

        survivor = workers.start(root, name="survivor")

        stopped = survivor.wait_event("orphan_cli_stopped", task=victim.id, timeout=30)
        assert (stopped["holder"], stopped["pgid"]) == (doomed.agent_id, str(cli["pgid"]))
        assert process_gone(cli["pid"]) and process_gone(child)  # stopped before the task ran again
        done = wait_terminal(town, victim.id, timeout=30)
        assert (done.state, done.assigned_to, done.attempts) == ("completed", survivor.agent_id, 2)
        assert [r["attempt"] for r in read_records(records) if r["event"] == "start"] == ["1", "2"]
    finally:
        kill_recorded_groups(records)


def test_the_cli_of_a_killed_worker_is_stopped_by_its_leash_even_if_no_worker_takes_over(
    worker_town, workers, tmp_path
):
    root = worker_town(heartbeat_interval_secs=1)
    town = open_town(root)
    records = tmp_path / "runs.jsonl"
    doomed, task, leash, cli, child = running_cli(root, town, workers, records)
    try:
        os.kill(doomed.pid, signal.SIGKILL)
        doomed.wait_exit()

        poll(
            lambda: process_gone(cli["pid"]) and process_gone(child),
            timeout=10,
            message="the leash to stop the CLI",
        )
        poll(lambda: process_gone(leash), timeout=10, message="the leash to leave")
        assert town.tasks.get(task.id).state == "running"  # left for reclaim, as before
    finally:
        kill_recorded_groups(records)


def test_one_leash_serves_every_task_of_a_worker_and_leaves_with_it(worker_town, workers, tmp_path):
    root = worker_town()
    town = open_town(root)
    worker = workers.start(root)
    first, second = town.tasks.add("[print one]"), town.tasks.add("[print two]")
    leashes = {worker.wait_event("cli_started", task=t.id)["leash_pid"] for t in (first, second)}
    assert (
        wait_terminal(town, second.id).state == "completed" == wait_terminal(town, first.id).state
    )
    (leash,) = map(int, leashes)  # the same watchdog, not one started per task
    assert not process_gone(leash)

    worker.signal(signal.SIGTERM)
    assert worker.wait_exit() == 0
    assert poll(
        lambda: process_gone(leash), timeout=5, message="the leash to leave with its worker"
    )


def test_a_cancel_stops_the_cli_at_once_not_at_the_next_heartbeat(worker_town, workers, tmp_path):
    root = worker_town(
        heartbeat_interval_secs=30, claim_timeout_secs=120
    )  # a heartbeat would notice only after 30 s
    town = open_town(root)
    records = tmp_path / "runs.jsonl"
    worker = workers.start(root)
    task = town.tasks.add(f"[record {records}] [child] [sleep 60]")
    worker.wait_event("cli_started", task=task.id)
    cli = poll(
        lambda: next((r["pid"] for r in read_records(records) if r["event"] == "start"), None)
    )

    town.tasks.cancel(task.id, "not needed any more")

    assert (
        worker.wait_event("task_finished", task=task.id, timeout=5)["outcome"] == "kept:cancelled"
    )
    assert poll(lambda: process_gone(cli), timeout=5, message="the CLI to be stopped")


def test_an_idle_worker_stopped_through_rest_leaves_at_once(worker_town, workers):
    root = worker_town(
        heartbeat_interval_secs=30, claim_timeout_secs=120, idle_timeout_secs=0
    )  # its read blocks 30 s
    town = open_town(root)
    worker = workers.start(root)
    worker.wait_event("agent_state", state="idle")
    time.sleep(0.5)  # blocked in its read by now

    town.agents.request_stop(worker.agent_id)  # what POST /v1/agents/{agent}/kill does

    assert worker.wait_exit(timeout=5) == 0


def test_a_leash_that_died_is_replaced_at_the_next_task(worker_town, workers):
    root = worker_town()
    town = open_town(root)
    worker = workers.start(root)
    first = town.tasks.add("[print one]")
    old = int(worker.wait_event("cli_started", task=first.id)["leash_pid"])
    assert wait_terminal(town, first.id).state == "completed"
    os.kill(old, signal.SIGKILL)

    second = town.tasks.add("[print two]")

    assert worker.wait_event("cli_leash_replaced", task=second.id)
    new = int(worker.wait_event("cli_started", task=second.id)["leash_pid"])
    assert new != old and not process_gone(new)
    assert wait_terminal(town, second.id).state == "completed"


def test_a_paused_worker_stopped_through_rest_leaves_at_once(worker_town, workers):
    root = worker_town(heartbeat_interval_secs=30, claim_timeout_secs=120, idle_timeout_secs=0)
    town = open_town(root)
    worker = workers.start(root)
    worker.wait_event("agent_state", state="idle")
    town.agents.set_state(worker.agent_id, "pause")
    control.publish(town.redis, town.keys, worker.agent_id, control.STOP)  # look at the record now
    worker.wait_event("agent_paused", timeout=5)
    time.sleep(0.3)  # waiting in its paused state by now

    town.agents.request_stop(worker.agent_id)  # what POST /v1/agents/{agent}/kill does

    assert worker.wait_exit(timeout=5) == 0


def test_what_a_cli_leaves_running_in_its_group_is_stopped_when_it_exits(
    worker_town, workers, tmp_path
):
    root = worker_town()
    town = open_town(root)
    records = tmp_path / "runs.jsonl"
    worker = workers.start(root)
    task = town.tasks.add(
        f"[record {records}] [child] [print done]"
    )  # exits 0, its child sleeps on
    try:
        assert wait_terminal(town, task.id).state == "completed"
        child = next(r["child_pid"] for r in read_records(records) if r["event"] == "child")
        assert worker.wait_event("cli_leftovers_stopped", task=task.id)
        assert poll(
            lambda: process_gone(child), timeout=10, message="the leftover child to be stopped"
        )
    finally:
        kill_recorded_groups(records)


# --- what is already stored can never stop a worker ---------------------------------------------


def test_a_stored_message_that_is_not_valid_text_reaches_the_prompt_replaced_and_the_worker_carries_on(
    worker_town, workers, tmp_path
):
    """A message with a lone surrogate (accepted before townhall refused them) once made the
    worker exit 1 on every new task; now the text is replaced (U+FFFD), logged, and the task runs."""
    import json

    root = worker_town()
    town = open_town(root)
    worker = workers.start(root, name="alpha")
    worker.wait_event("agent_state", state="idle")
    town.redis.rpush(
        town.keys.inbox(worker.agent_id),
        json.dumps({"id": "m1", "type": "task", "description": "x\ud800y"}),
    )
    prompt = tmp_path / "prompt.md"
    task = town.tasks.add(f"[prompt {prompt}]", agent_id=worker.agent_id)

    assert wait_terminal(town, task.id).state == "completed"
    assert "x\ufffdy" in prompt.read_text(encoding="utf-8")
    worker.wait_event("prompt_text_replaced", task=task.id)
    assert (
        town.redis.llen(town.keys.inbox(worker.agent_id)) == 0
    )  # taken with the task, not left to poison the next
    second = town.tasks.add("[print still here]")
    assert wait_terminal(town, second.id).state == "completed" and worker.alive()


def test_a_stored_task_naming_a_command_as_its_cli_fails_at_once_and_runs_nothing(
    worker_town, workers, tmp_path
):
    """`cli` was once passed to sh -c whatever it said; a task stored that way (or naming a CLI
    the town no longer configures) fails with the reason, attempt 1, and the worker goes on."""
    root = worker_town(max_attempts=3)
    town = open_town(root)
    marker = tmp_path / "ran"
    worker = workers.start(root)
    worker.wait_event("agent_state", state="idle")
    bad = town.tasks.add("x", cli=f"touch {marker}; true")
    odd = town.tasks.add("y", repo="ext::sh -c touch% /tmp/x")

    for task in (bad, odd):
        done = wait_terminal(town, task.id)
        assert done.state == "failed" and done.attempts == 1 and "cannot run" in done.result
        worker.wait_event("task_rejected", task=task.id)
    assert not marker.exists()
    good = town.tasks.add("[print fine]")
    assert wait_terminal(town, good.id).state == "completed" and worker.alive()


def test_a_cli_that_is_not_installed_fails_its_task_at_once_saying_so(worker_town, workers):
    """Its program not on the worker's PATH: one clear failure, not an exit 127 retried
    max_attempts times; a CLI that is installed still runs, and so does a shell line."""
    root = worker_town(max_attempts=3)
    with (root / "tinytown.toml").open("a") as toml:
        toml.write(
            '\n[agent_clis.ghost]\ncommand = "tt-ghost-cli-not-installed --print"\n'
            '\n[agent_clis.shell]\ncommand = "exec true"\n'
        )
    town = open_town(root)
    worker = workers.start(root)
    worker.wait_event("agent_state", state="idle")
    ghost = town.tasks.add("x", cli="ghost")
    done = wait_terminal(town, ghost.id)
    assert done.state == "failed" and done.attempts == 1
    assert "'tt-ghost-cli-not-installed' is not on its PATH" in done.result
    assert "[agent_clis.ghost] command" in done.result
    worker.wait_event("task_rejected", task=ghost.id)
    for cli in ("shell", None):
        ok = town.tasks.add("[print fine]", cli=cli)
        assert wait_terminal(town, ok.id).state == "completed" and worker.alive()


def test_bytes_that_are_not_utf8_in_a_stored_task_do_not_stop_the_worker(
    worker_town, workers, tmp_path
):
    """Another Redis client wrote raw bytes into a task's description: read as U+FFFD."""
    import redis

    root = worker_town()
    town = open_town(root)
    prompt = tmp_path / "prompt.md"
    task = town.tasks.add("placeholder")
    kwargs = {**town.redis.connection_pool.connection_kwargs, "decode_responses": False}
    binary = redis.Redis(
        connection_pool=redis.ConnectionPool(
            connection_class=town.redis.connection_pool.connection_class, **kwargs
        )
    )
    binary.hset(
        town.keys.task(task.id), "description", f"[prompt {prompt}] caf".encode() + b"\xe9\xff\xfe"
    )
    binary.close()

    worker = workers.start(root)
    assert wait_terminal(town, task.id).state == "completed"
    assert "caf\ufffd" in prompt.read_text(encoding="utf-8")
    assert worker.alive()


def test_an_attempts_end_written_again_after_a_lost_reply_counts_once(worker_town):
    """The final write's reply lost after Redis applied it: the worker's retry (RedisRetry)
    sends the same write again. It once counted the round, the completed task and the CLI's
    seconds twice, and marked the output's end twice. Driven in-process: a reply cannot be
    lost on demand through a real connection, so the write is simply sent twice."""
    root = worker_town()
    town = open_town(root)
    with in_process_worker(root) as worker:
        task = town.tasks.add("ends once")
        delivery = worker.next_delivery()  # claimed, as the read does
        token = new_token(task.id)
        worker.store.tokens.issue(task.id, token, 60)
        ts = to_rfc3339(now())
        ended = functools.partial(
            worker.store.attempt_ended,
            task.id,
            token=token,
            run_secs=2.5,
            move="complete",
            set_fields={"result": "done", "completed_at": ts},
            round_end=RoundEnd(delivery.entry, task.id, ts),
        )
        first, _, _ = ended()
        again, _, _ = ended()  # the retry
        agent = town.agents.get(worker.agent_id)

    assert first.ok and not again.ok  # the task was completed by the first
    assert town.tasks.get(task.id).state == "completed"
    assert town.tasks.worker_seconds_total() == 2.5
    assert (agent.rounds_completed, agent.tasks_completed) == (1, 1)
    ends = [f for _, f in town.redis.xrange(town.output.stream(task.id)) if "end" in f]
    assert len(ends) == 1
    assert acked(town, town.keys.docket)


def test_a_rounds_end_after_a_workspace_sent_again_after_a_lost_reply_counts_once(worker_town):
    """With a workspace (or a retry) after the final write, the round ends in a write of its
    own (``round_done``); a retry of it after a lost reply once counted the round and the
    completed task twice. Driven in-process, as above: the write is simply sent twice."""
    root = worker_town()
    town = open_town(root)
    with in_process_worker(root) as worker:
        task = town.tasks.add("ends once, after its workspace")
        delivery = worker.next_delivery()
        ts = to_rfc3339(now())
        final, _, _ = worker.store.attempt_ended(
            task.id, token=None, run_secs=0, move="complete", set_fields={"completed_at": ts}
        )
        ended = functools.partial(
            worker.store.round_done, delivery.entry, last_active_at=ts, output_of=task.id
        )
        first = ended()
        again = ended()  # the retry
        agent = town.agents.get(worker.agent_id)

    assert final.ok and first[0] == again[0] == "completed"
    assert (agent.rounds_completed, agent.tasks_completed) == (1, 1)
    ends = [f for _, f in town.redis.xrange(town.output.stream(task.id)) if "end" in f]
    assert len(ends) == 1
    assert acked(town, town.keys.docket)
