"""Cost: a worker started by the scaler knows its outpost and rate; each task records the seconds
its CLI ran and their cost; a mission sums its items'; /metrics counts worker-seconds."""

from __future__ import annotations

import os
import subprocess

import pytest

from tinytown.config import load_config
from tinytown.core.cost import charge, outpost_from_env
from tinytown.missions.dispatcher import Dispatcher
from tinytown.missions.start import start_mission
from tinytown.store import Town

from .conftest import CONFIG_ENV, tt_executable
from .worker_support import poll, worker_town, workers  # noqa: F401  (fixtures)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, (None, 0.0, None)),
        ({"TINYTOWN_OUTPOST": "gpu-1", "TINYTOWN_COST_PER_HOUR": "1.8"}, ("gpu-1", 1.8, None)),
        ({"TINYTOWN_COST_PER_HOUR": "0"}, (None, 0.0, None)),
    ],
)
def test_a_workers_outpost_and_rate_come_from_its_environment(env, expected):
    assert outpost_from_env(env) == expected


@pytest.mark.parametrize("raw", ["-1", "nan", "inf", "cheap", "1e999"])
def test_a_rate_that_does_not_parse_counts_as_zero_and_says_why(raw):
    outpost, rate, problem = outpost_from_env({"TINYTOWN_COST_PER_HOUR": raw})
    assert rate == 0.0 and "TINYTOWN_COST_PER_HOUR" in problem


def test_each_run_adds_its_seconds_and_cost():
    first = charge(None, None, 90.0, 3.6)
    assert first == {"worker_secs": "90.000", "cost": "0.090000"}
    assert charge(90.0, 0.09, 30.0, 3.6) == {"worker_secs": "120.000", "cost": "0.120000"}


def test_a_mission_reports_what_its_tasks_cost_at_the_workers_rate(worker_town, workers):
    root = worker_town()
    town = Town.connect(load_config(root, env={}))
    dispatcher = Dispatcher(town, tick_secs=1, lease_secs=3).start()
    try:
        mission, _ = start_mission(
            town,
            items=[
                {"key": "a", "title": "A [sleep 0.3]"},
                {"key": "b", "title": "B [sleep 0.3]", "depends_on": ["a"]},
            ],
        )
        worker = workers.start(
            root, env={"TINYTOWN_OUTPOST": "big-vm", "TINYTOWN_COST_PER_HOUR": "36"}
        )
        poll(lambda: town.missions.get(mission.id).state == "completed", timeout=30)
        agent = town.agents.get(worker.agent_id)
        assert (agent.outpost, agent.cost_per_hour) == ("big-vm", 36.0)
        tasks = [town.tasks.get(i["task_id"]) for i in town.missions.work_items(mission.id)]
        for task in tasks:
            assert 0.3 <= task.worker_secs < 10
            assert task.cost == pytest.approx(task.worker_secs * 36 / 3600, abs=1e-5)
        summary = town.missions.summary(mission.id)
        assert summary["worker_secs"] == pytest.approx(sum(t.worker_secs for t in tasks), abs=0.01)
        assert summary["cost"] == pytest.approx(sum(t.cost for t in tasks), abs=1e-5)
        assert town.tasks.worker_seconds_total() >= summary["worker_secs"] - 0.01
        env = {k: v for k, v in os.environ.items() if k not in CONFIG_ENV}
        shown = subprocess.run(
            [tt_executable(), "--town", str(root), "task", "show", tasks[0].id[:8]],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert shown.returncode == 0, shown.stderr
        assert f"worker_secs: {tasks[0].worker_secs}" in shown.stdout
        assert f"cost: {tasks[0].cost}" in shown.stdout
        status = subprocess.run(
            [tt_executable(), "--town", str(root), "mission", "status", mission.id],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert f"cost: {summary['cost']:.4f} for" in status.stdout, status.stdout
    finally:
        dispatcher.stop()
        town.close()
