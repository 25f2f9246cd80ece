"""Concurrent changes an outside race review found unsafe, each driven to its bad interleaving
deterministically (real Redis, the real stores and worker code, steps taken in the order the
race takes them):

- a prune deleted an agent whose worker still ran a task; the round's end then counted on the
  deleted record, making a record with no id that a worker adopting the id took for its own;
- the orphan-task sweep re-queued such a task while its worker still ran it (two runs at once);
- recovery acknowledged an entry another worker had just taken over (its task stuck);
- a restart marked a working agent idle (a scaler may remove it);
- a mission note racing a stop failed the dispatcher's whole round.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from tinytown.core.clock import now, to_rfc3339
from tinytown.core.errors import InvalidTransition
from tinytown.core.liveness import Beat
from tinytown.missions.notes import apply_note
from tinytown.missions.start import start_mission
from tinytown.ops import run
from tinytown.recovery import orphan_tasks
from tinytown.store.task_tokens import new_token
from tinytown.store.worker import RoundEnd

from .api_support import app, client  # noqa: F401 - fixtures
from .test_worker_dispatch import open_town
from .worker_support import in_process_worker, worker_town  # noqa: F401 - fixtures


def working(town, name: str, task_id: str):
    """An agent whose worker runs ``task_id``: working, the task recorded, a fresh heartbeat."""
    agent = town.agents.register(name, "fake")
    town.agents.update(agent.id, "work", set_fields={"current_task": task_id}, beat=Beat(60))
    return agent


def test_prune_keeps_agents_whose_worker_may_still_run_a_task(town):
    task = town.tasks.add("long")
    busy = working(town, "busy", task.id)
    killed = working(town, "killed", task.id)
    town.agents.request_stop(killed.id)  # stopped from outside, its worker finishes the task
    done = town.agents.register("done", "fake")
    town.agents.set_state(done.id, "kill")

    pruned = run("agent.prune", town, {})
    assert pruned == {"removed": 1, "agents": ["done"], "kept": ["killed"]}
    everyone = run("agent.prune", town, {"all": True})
    assert everyone["removed"] == 0 and sorted(everyone["kept"]) == ["busy", "killed"]
    assert town.agents.find(busy.id) and town.agents.find(killed.id)


def test_a_rounds_end_on_a_deleted_agent_makes_no_record(worker_town):
    """(Before prune kept them, the round's end counted on the deleted record: a hash with
    counters only, no id, no state, in no index.)"""
    root = worker_town()
    town = open_town(root)
    with in_process_worker(root) as worker:
        task = town.tasks.add("ends after its agent was deleted")
        delivery = worker.next_delivery()
        town.agents.delete(worker.agent_id)
        token = new_token(task.id)
        worker.store.tokens.issue(task.id, token, 60)
        ts = to_rfc3339(now())
        ended, _, _ = worker.store.attempt_ended(
            task.id,
            token=token,
            run_secs=1.0,
            move="complete",
            set_fields={"result": "done", "completed_at": ts},
            round_end=RoundEnd(delivery.entry, task.id, ts),
        )
    assert ended.ok and town.tasks.get(task.id).state == "completed"
    assert not town.redis.exists(town.keys.agent(worker.agent_id))


def test_registering_over_a_record_with_no_id_makes_a_whole_new_one(town):
    """A worker restarted with TINYTOWN_AGENT_ID of a pruned agent, over such a left-over."""
    agent_id = "0b6c3f5e-7d4a-4c1e-9a8b-2f1e3d4c5b6a"
    town.redis.hset(town.keys.agent(agent_id), mapping={"rounds_completed": 1, "name": "old"})
    agent = town.agents.register("again", "fake", agent_id=agent_id)
    assert agent.id == agent_id and agent.name == "again" and agent.state == "starting"
    assert agent.rounds_completed == 0
    assert agent_id in town.agents.ids()


def test_an_orphan_sweep_leaves_a_task_whose_worker_still_keeps_its_entry(worker_town):
    """Its agent deleted (or stopped) while the worker runs the task: re-queueing it would run
    it twice at once. Once the entry has gone unrefreshed past claim_timeout_secs, it is an
    orphan."""
    root = worker_town()  # claim_timeout_secs = 2
    town = open_town(root)
    with in_process_worker(root) as worker:
        task = town.tasks.add("still running")
        worker.next_delivery()
        town.agents.delete(worker.agent_id)
        kept = orphan_tasks(town, "to_backlog")
        assert kept["count"] == 0 and town.tasks.get(task.id).state == "running"
        time.sleep(town.config.agent.claim_timeout_secs + 0.3)  # nobody refreshes the entry
        swept = orphan_tasks(town, "to_backlog")
    assert swept["count"] == 1 and swept["orphans"][0]["reason"] == "agent_missing"
    assert town.tasks.get(task.id).state == "pending"


def test_recovery_leaves_an_entry_another_worker_took_over_since_it_was_listed(worker_town):
    root = worker_town()
    town = open_town(root)
    with in_process_worker(root) as holder:
        task = town.tasks.add("taken over")
        delivery = holder.next_delivery()
        entry = delivery.entry
        taker = town.agents.register("taker", "fake")
        # the taker's XAUTOCLAIM lands between recovery's listing and its acknowledgement
        town.redis.xclaim(entry.stream, "workers", taker.id, 0, [entry.entry_id])
        assert not town.dockets.ack(entry.stream, entry.entry_id, holder.agent_id)
        assert town.dockets.release(entry.stream, entry.entry_id, holder.agent_id) == ""
        held = town.dockets.held(entry.stream, taker.id)
    assert [e for e, _ in held] == [entry.entry_id]  # still the taker's, unacknowledged
    assert town.redis.xlen(entry.stream) == 1  # and no copy was put back
    assert town.tasks.get(task.id).state == "running"


def test_a_restart_is_refused_while_the_agents_cli_runs_a_task(town):
    task = town.tasks.add("running")
    agent = working(town, "busy", task.id)
    town.redis.set(town.keys.stop(agent.id), "1")
    with pytest.raises(InvalidTransition, match="while it works on a task"):
        town.agents.restart(agent.id)
    assert town.agents.get(agent.id).state == "working"
    assert town.redis.exists(town.keys.stop(agent.id))  # left as it was
    town.agents.set_state(agent.id, "pause")  # paused while the CLI runs: still refused
    with pytest.raises(InvalidTransition):
        town.agents.restart(agent.id)
    town.agents.update(agent.id, "resume", delete_fields=("current_task",))
    assert town.agents.restart(agent.id) == "idle"
    assert not town.redis.exists(town.keys.stop(agent.id))


def test_a_working_agents_restart_over_rest_is_409(client, town):
    task = town.tasks.add("running")
    agent = working(town, "busy", task.id)
    resp = client.post(f"/v1/agents/{agent.id}/restart")
    assert resp.status_code == 409 and "while it works on a task" in resp.json["detail"]


@pytest.mark.parametrize(("body", "move"), [("pause", "stop"), ("resume", "complete")])
def test_a_note_checked_against_a_state_that_changed_since_says_so(town, body, move):
    """The dispatcher checks a note against its snapshot; a stop (or the end) over REST can land
    before the note's move. The note is answered, the round goes on."""
    mission, _ = start_mission(town, items=[{"key": "a", "title": "A"}], title="race")
    if body == "resume":
        town.missions.stop(mission.id)
    snapshot = town.missions.snapshot(mission.id)
    getattr(town.missions, move)(mission.id)
    outcome, cancel = apply_note(
        town, mission.id, snapshot.mission, snapshot.items, {"body": body, "sender": "op"}
    )
    assert outcome.startswith(f"{body!r}: not ") and cancel == []


def test_every_delete_appends_its_event(town):
    """Decision 11: every state change appends its event; deleting records did not."""
    mission, _ = start_mission(town, items=[{"key": "a", "title": "A"}], title="gone")
    pending = town.tasks.add("removed from the backlog")
    town.tasks.remove_from_backlog(pending.id)
    done = town.tasks.add("deleted when done")
    town.tasks.complete(done.id, "ok")
    town.tasks.delete(done.id)
    agent = town.agents.register("pruned", "fake")
    town.agents.set_state(agent.id, "kill")
    run("agent.prune", town, {})
    town.missions.delete(mission.id, force=True)
    docs = {
        (e["event_type"], e.get("task_id") or e.get("agent_id") or e.get("mission_id")): e
        for e in town.events.latest(50)
    }
    assert docs[("task_deleted", pending.id)]["old_state"] == "pending"
    assert docs[("task_deleted", done.id)]["old_state"] == "completed"
    assert docs[("agent_deleted", agent.id)]["old_state"] == "stopped"
    assert docs[("mission_deleted", mission.id)]["old_state"] == mission.state
    assert not town.redis.exists(town.keys.mission_event_stream(mission.id))  # not made again


def test_an_earlier_attempts_token_cannot_report_the_task_once_another_attempt_took_it(
    worker_town,
):
    """A frozen worker judged dead: its task went back and another worker took it; the first
    attempt's CLI, still running, completed it with its token (200) while the second ran."""
    from tinytown.store.task_tokens import TaskTokens

    root = worker_town()
    town = open_town(root)
    tokens = TaskTokens.of(town)
    with in_process_worker(root) as first:
        task = town.tasks.add("taken twice")
        first.next_delivery()
        old = new_token(task.id)
        tokens.issue(task.id, old, 60)
        assert tokens.valid(task.id, old)
        assert town.tasks.requeue(task.id, expect="running", assignee=first.agent_id).ok
        second = town.agents.register("second", "fake")
        docket = town.docket(second.id)
        docket.ensure_groups()
        taken = docket.read(1000)
        docket.close()
    assert taken.claim.task.id == task.id and town.tasks.get(task.id).assigned_to == second.id
    assert not tokens.valid(task.id, old)


def given_to_another(town, task_id: str, frozen_id: str):
    """What recovery and an idle worker do to a frozen worker's running task: back to the
    backlog, then claimed by another agent; returns that agent."""
    assert town.tasks.requeue(task_id, expect="running", assignee=frozen_id).ok
    other = town.agents.register("other", "fake")
    docket = town.docket(other.id)
    docket.ensure_groups()
    assert docket.read(1000).claim.task.id == task_id
    docket.close()
    return other


def test_a_worker_that_froze_after_its_claim_does_not_run_the_task_another_finished(
    worker_town, tmp_path
):
    """A worker frozen in its read (SIGSTOP, docker pause): Redis served the read and ran the
    claim; the keeper gave the task back and another worker finished it; thawed, the first
    started its CLI on the finished task and gave it its prompt."""
    root = worker_town()
    town = open_town(root)
    record = tmp_path / "runs.jsonl"
    with in_process_worker(root) as frozen:
        task = town.tasks.add(f"[record {record}] [sleep 5] done elsewhere")
        delivery = frozen.next_delivery()  # claimed just before the freeze
        other = given_to_another(town, task.id, frozen.agent_id)
        assert town.tasks.complete(task.id, "done by the other", agent_id=other.id).ok
        began = time.monotonic()
        frozen.work_on(delivery.entry, delivery.claim)  # thawed
        took = time.monotonic() - began
    assert took < 3 and not record.exists()  # stopped at once, its prompt never given
    done = town.tasks.get(task.id)
    assert (done.state, done.result, done.assigned_to) == (
        "completed",
        "done by the other",
        other.id,
    )


def test_a_retry_first_stops_an_earlier_run_of_its_task_still_going_on_this_host(worker_town):
    """A frozen worker (SIGSTOP) judged dead: recovery gave its running task back to the backlog,
    naming no holder, and another worker ran it beside the first run's CLI, which went on."""
    root = worker_town()
    town = open_town(root)
    with in_process_worker(root) as first:
        task = town.tasks.add("[sleep 0.2] run again")
        first.next_delivery()
        env = {**os.environ, "TINYTOWN_AGENT_ID": first.agent_id, "TINYTOWN_TASK_ID": task.id}
        earlier = subprocess.Popen(["sleep", "300"], env=env, start_new_session=True)
        try:
            assert town.tasks.requeue(task.id, expect="running", assignee=first.agent_id).ok
            with in_process_worker(root) as second:
                delivery = second.next_delivery()
                assert delivery.claim.task.attempts == 2
                second.work_on(delivery.entry, delivery.claim)
            assert earlier.wait(timeout=10) == -signal.SIGTERM
        finally:
            if earlier.poll() is None:
                os.killpg(earlier.pid, signal.SIGKILL)
                earlier.wait()
    assert town.tasks.get(task.id).state == "completed"


def test_a_thawed_worker_leaves_the_running_attempts_token_and_the_inbox_alone(worker_town):
    """The same thaw while another attempt still runs the task: the CLI start's writes stored
    the thawed worker's token over the running attempt's (its CLI then got 401) and removed the
    inbox messages read with the claim for a prompt never given (messages lost)."""
    from tinytown.store.task_tokens import TaskTokens

    root = worker_town()
    town = open_town(root)
    tokens = TaskTokens.of(town)
    with in_process_worker(root) as frozen:
        town.inbox.send(frozen.agent_id, "also read the docs", kind="info")
        task = town.tasks.add("[sleep 5] still running elsewhere")
        delivery = frozen.next_delivery()  # claimed, with its inbox, just before the freeze
        assert delivery.claim.peeked[1]
        other = given_to_another(town, task.id, frozen.agent_id)
        live = new_token(task.id)  # the other attempt's CLI runs, with its token
        tokens.issue(task.id, live, 60)
        frozen.work_on(delivery.entry, delivery.claim)  # thawed
        assert tokens.valid(task.id, live)
        assert town.redis.llen(town.keys.inbox(frozen.agent_id)) == 1
    running = town.tasks.get(task.id)
    assert (running.state, running.assigned_to) == ("running", other.id)
