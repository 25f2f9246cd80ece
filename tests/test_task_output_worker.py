"""Task output from anywhere, with real worker processes running ``tests/fake_cli.py``: the output
of a running task is readable over REST while it runs, ``tt task logs --follow`` prints what comes
later and exits when the task ends, the byte bound holds, the stream expires after the final
state, and a worker whose output writes fail still completes its task. The local log file stays
the whole copy throughout."""

from __future__ import annotations

import os
import subprocess
import time

from tinytown.api import create_app
from tinytown.config import load_config
from tinytown.core import defaults
from tinytown.core.clock import parse_rfc3339
from tinytown.store import Town

from .api_support import SpecClient
from .conftest import CONFIG_ENV, tt_executable
from .worker_support import poll, worker_town, workers  # noqa: F401  (fixtures)


def open_town(root) -> Town:
    return Town.connect(load_config(root, env={}))


def wait_terminal(town: Town, task_id: str, timeout: float = 30.0):
    return poll(
        lambda: (t := town.tasks.find(task_id)) is not None and t.terminal and t,
        timeout=timeout,
        message=f"task {task_id} to finish",
    )


def stream_text(town: Town, task_id: str) -> str:
    entries = town.redis.xrange(town.keys.task_output(task_id))
    return "".join(f.get("text", "") for _, f in entries)


def log_file(root, task_id: str) -> str:
    return (root / ".tt" / "logs" / "tasks" / f"{task_id}.log").read_text()


def test_a_running_tasks_output_is_readable_over_rest_while_it_runs(worker_town, workers):
    root = worker_town()
    town = open_town(root)
    client = SpecClient(create_app(town.config, town=town))
    worker = workers.start(root, name="speaker")
    worker.wait_event("agent_state", state="idle")

    task = town.tasks.add("[lines 3] [sleep 3]")
    url = f"/v1/tasks/{task.id}/log"

    def running_output():
        body = client.get(url).get_json()
        return "output line 00002" in "".join(c["text"] for c in body["chunks"]) and body

    body = poll(running_output, timeout=10, message="the output over REST")
    assert town.tasks.get(task.id).state == "running" and not body["finished"]
    text = "".join(c["text"] for c in body["chunks"])
    assert text.startswith(f"=== attempt 1 by speaker ({worker.agent_id})\n")
    assert text.endswith("output line 00000\noutput line 00001\noutput line 00002\n")

    rest = client.get(f"{url}?after={body['next_after']}&wait=10").get_json()
    assert rest["finished"] and rest["chunks"] == [] and not rest["truncated"]
    assert wait_terminal(town, task.id).state == "completed"
    assert log_file(root, task.id) == text  # the local file, exactly as before


def test_tt_task_logs_follow_prints_later_output_and_exits_when_the_task_ends(worker_town, workers):
    root = worker_town()
    town = open_town(root)
    worker = workers.start(root)
    worker.wait_event("agent_state", state="idle")
    task = town.tasks.add("[print early bird] [sleep 2] [print late riser]")
    poll(lambda: "early bird" in stream_text(town, task.id), timeout=10, message="early output")

    env = {k: v for k, v in os.environ.items() if k not in CONFIG_ENV}
    follower = subprocess.Popen(
        [tt_executable(), "--town", str(root), "task", "logs", task.id, "--follow"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = follower.communicate(timeout=20)
    finally:
        if follower.poll() is None:
            follower.kill()
    exited = time.time()
    assert follower.returncode == 0, err
    assert "early bird\n" in out and out.endswith("late riser\n")
    done_at = parse_rfc3339(town.tasks.get(task.id).completed_at).timestamp()
    assert exited - done_at < 2.0  # woken by the end of the task, not by a timeout
    assert out == log_file(root, task.id)
    done = subprocess.run(
        [tt_executable(), "--town", str(root), "task", "logs", task.id],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0 and done.stdout == out


def test_the_byte_bound_trims_old_output_and_says_truncated(worker_town, workers):
    root = worker_town()
    town = open_town(root)
    worker = workers.start(root)
    worker.wait_event("agent_state", state="idle")

    # 80 000 lines of 18 bytes, in two bursts: 1.44 MB, past the 1 MiB the stream keeps.
    task = town.tasks.add("[lines 40000] [sleep 1] [lines 40000]")
    assert wait_terminal(town, task.id).state == "completed"
    kept = stream_text(town, task.id)
    assert (
        len(kept.encode()) <= defaults.TASK_OUTPUT_MAX_BYTES + defaults.TASK_OUTPUT_CHUNK_MAX_BYTES
    )
    assert kept.endswith("output line 39999\n")
    page = town.output.page(task.id)
    assert page.truncated and page.finished
    assert log_file(root, task.id).count("\n") == 80_001  # the local file keeps all of it


def test_the_stream_expires_after_the_final_state(worker_town, workers):
    root = worker_town()
    town = open_town(root)
    worker = workers.start(root)
    worker.wait_event("agent_state", state="idle")
    task = town.tasks.add("[print bye]")
    assert wait_terminal(town, task.id).state == "completed"
    key = town.keys.task_output(task.id)
    poll(lambda: town.output.page(task.id).finished, timeout=5, message="the end entry")
    assert 0 < town.redis.ttl(key) <= defaults.TASK_OUTPUT_TTL_SECS
    assert "bye\n" in stream_text(town, task.id)


def test_a_worker_whose_output_writes_fail_still_completes_its_task(worker_town, workers):
    root = worker_town()
    town = open_town(root)
    task = town.tasks.add("[lines 5] [sleep 1] [print still here]")
    town.redis.set(town.keys.task_output(task.id), "not a stream")  # every XADD fails: WRONGTYPE
    worker = workers.start(root)

    assert wait_terminal(town, task.id).state == "completed"
    assert "still here" in town.tasks.get(task.id).result
    assert "still here" in log_file(root, task.id)
    worker.wait_event("task_finished", task=task.id)
    failures = worker.events("task_output_failed")
    assert len(failures) == 1 and "WRONGTYPE" in failures[0]["detail"]
    assert failures[0]["task"] == task.id
    assert worker.alive()
    other = town.tasks.add("[print next one]")  # and the worker goes on, streaming again
    assert wait_terminal(town, other.id).state == "completed"
    assert "next one" in stream_text(town, other.id)
