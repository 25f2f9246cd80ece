"""Dispatch through real worker processes: pick-up, direct assignment, claim, removal, exclusivity."""

from __future__ import annotations

import json
from collections import Counter

from tinytown.config import load_config
from tinytown.core.clock import parse_rfc3339
from tinytown.store import Town

from .worker_support import poll, read_records, worker_town, workers  # noqa: F401  (fixtures)


def open_town(root):
    return Town.connect(load_config(root, env={}))


def wait_terminal(town, task_id, timeout=20.0):
    return poll(
        lambda: (t := town.tasks.find(task_id)) is not None and t.terminal and t,
        timeout=timeout,
        message=f"task {task_id} to finish",
    )


def pending_entries(town, stream):
    return town.redis.xpending(stream, "workers")["pending"]


def acked(town, stream):
    """Entries are acknowledged just after the final state is written: wait for that."""
    return poll(
        lambda: pending_entries(town, stream) == 0,
        timeout=5,
        message=f"every entry on {stream} acknowledged",
    )


def test_an_idle_worker_picks_up_a_new_task_at_once(worker_town, workers, tmp_path):
    root = worker_town()
    town = open_town(root)
    worker = workers.start(root)
    worker.wait_event("agent_state", state="idle")

    task = town.tasks.add("[print hello from the fake CLI]")
    done = wait_terminal(town, task.id)

    assert done.state == "completed"
    assert done.assigned_to == worker.agent_id and done.attempts == 1
    assert "hello from the fake CLI" in done.result
    started, created = parse_rfc3339(done.started_at), parse_rfc3339(done.created_at)
    assert 0 <= (started - created).total_seconds() < 1.0
    assert acked(town, town.keys.docket)  # acknowledged after the final state
    agent = poll(lambda: (a := town.agents.get(worker.agent_id)).state == "idle" and a)
    assert (agent.state, agent.tasks_completed, agent.current_task) == ("idle", 1, None)
    log = (root / ".tt" / "logs" / "tasks" / f"{task.id}.log").read_text()
    assert "hello from the fake CLI" in log


def test_the_cli_gets_the_prompt_on_stdin_with_inbox_messages_and_its_environment(
    worker_town, workers, tmp_path
):
    root = worker_town()
    town = open_town(root)
    worker = workers.start(root, name="alice")
    worker.wait_event("agent_state", state="idle")

    town.inbox.send(worker.agent_id, "remember to update the changelog", kind="info")
    prompt_file, env_file = tmp_path / "prompt.md", tmp_path / "env.json"
    task = town.tasks.add(f"[prompt {prompt_file}] [env {env_file}]")
    wait_terminal(town, task.id)

    prompt = prompt_file.read_text()
    assert task.id in prompt and f"tt task complete {task.id}" in prompt
    assert "remember to update the changelog" in prompt
    assert town.redis.llen(town.keys.inbox(worker.agent_id)) == 0  # drained into the prompt
    seen = json.loads(env_file.read_text())
    assert seen["env"]["TINYTOWN_TASK_ID"] == task.id
    assert seen["env"]["TINYTOWN_AGENT_ID"] == worker.agent_id
    assert seen["env"]["TINYTOWN_AGENT_NAME"] == "alice"
    assert seen["env"]["TINYTOWN_TASK_ATTEMPT"] == "1"
    assert seen["env"]["TINYTOWN_URL"].startswith("http://127.0.0.1:")
    assert seen["cwd"] == str(root)


def test_custom_cli_workdir_and_env_are_applied(tmp_path, redis_url, workers):
    import sys

    from .worker_support import FAKE_CLI, agent_table

    root = tmp_path / "town"
    (root / "sub").mkdir(parents=True)
    table = agent_table().replace(
        "[agent_clis.fake]",
        f'[agent_clis.other]\ncommand = "{sys.executable} {FAKE_CLI}"\nworkdir = "sub"\nenv = {{ FAKE_FLAVOUR = "mint" }}\n\n[agent_clis.fake]',
    )
    (root / "tinytown.toml").write_text(
        f'name = "cw-{tmp_path.name[-8:]}"\ndefault_cli = "fake"\n[redis]\nurl = "{redis_url}"\n{table}'
    )
    town = open_town(root)
    workers.start(root).wait_event("agent_state", state="idle")
    env_file = tmp_path / "env.json"
    task = town.tasks.add(f"[env {env_file}]", cli="other")
    assert wait_terminal(town, task.id).state == "completed"
    seen = json.loads(env_file.read_text())
    assert seen["cwd"] == str(root / "sub")
    assert seen["env"]["FAKE_FLAVOUR"] == "mint"


def test_auggie_gets_the_prompt_as_an_instruction_file(tmp_path, redis_url, workers):
    import sys

    from .worker_support import FAKE_CLI, agent_table

    root = tmp_path / "town"
    root.mkdir()
    table = agent_table().replace(
        "[agent_clis.fake]",
        f'[agent_clis.auggie]\ncommand = "{sys.executable} {FAKE_CLI}"\n\n[agent_clis.fake]',
    )
    (root / "tinytown.toml").write_text(
        f'name = "au-{tmp_path.name[-8:]}"\ndefault_cli = "fake"\n[redis]\nurl = "{redis_url}"\n{table}'
    )
    town = open_town(root)
    workers.start(root).wait_event("agent_state", state="idle")
    prompt_file = tmp_path / "prompt.md"
    task = town.tasks.add(f"[prompt {prompt_file}]", cli="auggie")
    assert wait_terminal(town, task.id).state == "completed"
    assert f"# Task {task.id}" in prompt_file.read_text()


def test_a_task_assigned_to_an_agent_runs_on_that_agent(worker_town, workers, tmp_path):
    root = worker_town()
    town = open_town(root)
    first, second = workers.start(root, name="first"), workers.start(root, name="second")
    for w in (first, second):
        w.wait_event("agent_state", state="idle")
    records = tmp_path / "runs.jsonl"

    tasks = [town.tasks.add(f"[record {records}]", agent_id=second.agent_id) for _ in range(3)]
    for t in tasks:
        assert wait_terminal(town, t.id).state == "completed"

    runs = [r for r in read_records(records) if r["event"] == "start"]
    assert {r["agent"] for r in runs} == {second.agent_id}
    assert town.redis.xlen(town.keys.docket) == 0  # never on the shared docket
    assert acked(town, town.keys.agent_docket(second.agent_id))


def test_a_backlog_task_claimed_for_an_agent_runs_there_and_its_shared_entry_is_skipped(
    worker_town, workers, run_tt, tmp_path
):
    root = worker_town()
    town = open_town(root)
    agent = town.agents.register("claimer", "fake")
    records = tmp_path / "runs.jsonl"
    task = town.tasks.add(f"[record {records}]")
    claimed = run_tt("backlog", "claim", task.id, "claimer", cwd=root)
    assert claimed.returncode == 0, claimed.stderr

    worker = workers.start(root, name="claimer", agent_id=agent.id)
    done = wait_terminal(town, task.id)

    assert done.state == "completed" and done.assigned_to == agent.id
    assert [r["agent"] for r in read_records(records) if r["event"] == "start"] == [agent.id]
    skipped = worker.wait_event("entry_skipped", task=task.id)
    assert skipped["reason"] == "state:running" or skipped["reason"].startswith("state:")
    assert acked(town, town.keys.docket)


def test_a_task_removed_before_pickup_is_skipped_and_acknowledged(worker_town, workers, tmp_path):
    root = worker_town()
    town = open_town(root)
    records = tmp_path / "runs.jsonl"
    removed = town.tasks.add(f"[record {records}]")
    town.tasks.remove_from_backlog(removed.id)
    kept = town.tasks.add(f"[record {records}]")

    worker = workers.start(root)
    assert wait_terminal(town, kept.id).state == "completed"

    assert worker.wait_event("entry_skipped", task=removed.id)["reason"] == "missing"
    assert [r["task"] for r in read_records(records) if r["event"] == "start"] == [kept.id]
    assert acked(town, town.keys.docket)


def test_two_workers_never_run_one_task(worker_town, workers, tmp_path):
    root = worker_town()
    town = open_town(root)
    records = tmp_path / "runs.jsonl"
    pair = [workers.start(root), workers.start(root)]
    for w in pair:
        w.wait_event("agent_state", state="idle")

    tasks = [town.tasks.add(f"[record {records}] [sleep 0.05]") for _ in range(30)]
    for t in tasks:
        assert wait_terminal(town, t.id).state == "completed"

    starts = Counter(r["task"] for r in read_records(records) if r["event"] == "start")
    assert set(starts) == {t.id for t in tasks}
    assert max(starts.values()) == 1
    assert {r["agent"] for r in read_records(records)} == {
        w.agent_id for w in pair
    }  # both took work


def test_a_long_task_is_not_taken_over_while_its_worker_lives(worker_town, workers, tmp_path):
    root = worker_town(claim_timeout_secs=2)
    town = open_town(root)
    records = tmp_path / "runs.jsonl"
    busy = workers.start(root)
    busy.wait_event("agent_state", state="idle")
    task = town.tasks.add(f"[record {records}] [sleep 5]")
    busy.wait_event("task_started", task=task.id)
    idle = workers.start(root)  # idle, sweeping for stale entries every second
    idle.wait_event("agent_state", state="idle")

    def heartbeat_advances():
        first = town.agents.get(busy.agent_id).last_heartbeat
        return poll(lambda: town.agents.get(busy.agent_id).last_heartbeat != first, timeout=3)

    assert heartbeat_advances()  # written while the CLI runs
    assert wait_terminal(town, task.id).state == "completed"
    assert [r["agent"] for r in read_records(records) if r["event"] == "start"] == [busy.agent_id]
    assert not idle.events("entry_reclaimed")


def test_the_result_keeps_the_last_4_kib_of_output_and_the_log_keeps_it_all(worker_town, workers):
    root = worker_town()
    town = open_town(root)
    workers.start(root)

    task = town.tasks.add("[lines 1000]")  # ~18 KiB of output
    done = wait_terminal(town, task.id)

    assert done.state == "completed"
    assert len(done.result.encode()) <= 4096 and done.result.rstrip().endswith("output line 00999")
    log = (root / ".tt" / "logs" / "tasks" / f"{task.id}.log").read_text()
    assert "output line 00000" in log and "output line 00999" in log


def test_a_cli_that_reports_completion_and_keeps_running_is_not_stopped(
    worker_town, workers, tmp_path
):
    """Only a cancel stops a running CLI: one that reported `tt task complete` and then works on
    for a few heartbeats (1 s here) finishes in peace."""
    root = worker_town()
    town = open_town(root)
    worker = workers.start(root)
    worker.wait_event("agent_state", state="idle")
    task = town.tasks.add("[complete] [sleep 2.5] [print wrapped up]")
    done = wait_terminal(town, task.id)
    assert done.state == "completed"
    finished = worker.wait_event("cli_exited", task=task.id)
    assert finished["exit_code"] == "0" and not worker.events("cli_stopping")
    log = (root / ".tt" / "logs" / "tasks" / f"{task.id}.log").read_text()
    assert "wrapped up" in log
