"""An operator pauses an agent and resumes it (REST, MCP, tt): the worker takes no new work
while paused and takes it again once resumed. The pause existed in the state table and the
worker, and docs/worker.md said an operator sets it, but nothing reachable set it."""

from __future__ import annotations

import time

from tinytown.core.liveness import Beat

from .api_support import app, client  # noqa: F401 - fixtures
from .test_worker_dispatch import open_town, wait_terminal
from .worker_support import poll, worker_town, workers  # noqa: F401 - fixtures


def test_pause_and_resume_over_rest_move_the_agent_and_refuse_what_does_not_apply(client, town):
    agent = town.agents.register("ann", "fake")
    town.agents.set_state(agent.id, "ready")
    paused = client.post("/v1/agents/ann/pause")
    assert paused.status_code == 200 and paused.get_json() == {"status": "paused", "agent": "ann"}
    assert town.agents.get(agent.id).state == "paused"
    again = client.post("/v1/agents/ann/pause")
    assert again.status_code == 409 and "paused" in again.get_json()["detail"]
    assert client.post("/v1/agents/ann/resume").get_json()["status"] == "resumed"
    assert town.agents.get(agent.id).state == "idle"
    assert client.post("/v1/agents/ann/resume").status_code == 409
    assert client.post("/v1/agents/nobody/pause").status_code == 404


def test_a_pause_lifted_while_the_cli_runs_makes_the_agent_working_not_idle(town):
    task = town.tasks.add("long")
    agent = town.agents.register("busy", "fake")
    town.agents.update(agent.id, "work", set_fields={"current_task": task.id}, beat=Beat(60))
    assert town.agents.pause(agent.id) == "working"
    assert town.agents.resume(agent.id) == "paused"
    assert town.agents.get(agent.id).state == "working"  # (idle would let a scaler remove it)


def test_a_paused_worker_takes_no_work_until_resumed(worker_town, workers, run_tt):
    root = worker_town()
    town = open_town(root)
    workers.start(root, name="pausable")
    agent = poll(lambda: next((a for a in town.agents.all() if a.state == "idle"), None))
    paused = run_tt("agent", "pause", "pausable", cwd=root)
    assert paused.returncode == 0 and paused.stdout.startswith("Paused agent pausable"), paused
    task = town.tasks.add("waits for the resume")
    time.sleep(2)
    assert town.tasks.get(task.id).state == "pending"
    resumed = run_tt("agent", "resume", "pausable", cwd=root)
    assert resumed.returncode == 0 and "idle" in resumed.stdout, resumed
    assert wait_terminal(town, task.id).state == "completed"
    assert town.tasks.get(task.id).assigned_to == agent.id
