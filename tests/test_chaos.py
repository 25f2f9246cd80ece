"""Chaos at scale, bounded for CI (issue 16 §5): the code of ``bench/bench_chaos.py`` with
smaller numbers — real workers SIGKILLed at random every 2–4 s while tasks flow, a supervisor
starting new ones, townhall's keeper recovering the dead ones' work — and a Redis restart
mid-run. About 45 s together; the full-size runs are in docs/benchmarks.md.
"""

from __future__ import annotations

import json

import pytest

from bench.chaos_town import Chaos, run_chaos

pytestmark = pytest.mark.slow


def shown(summary: dict) -> str:
    return json.dumps(summary, indent=1)[:6000]


def test_workers_killed_at_random_lose_no_task_and_rerun_only_what_they_held():
    chaos = Chaos(tasks=300, workers=3, task_secs=0.2, kill_every_secs=(2.0, 4.0), backlog=100)

    summary = run_chaos(chaos)

    assert summary["problems"] == [], shown(summary)
    assert summary["completed"] == summary["tasks"] == 300
    assert (summary["lost"], summary["failed"]) == (0, 0)
    assert summary["kills"] >= 3, shown(summary)  # the chaos happened
    assert summary["duplicate_runs"] <= summary["kills_mid_task"] <= summary["kills"]
    assert summary["duplicates_unexplained"] == 0
    assert summary["unexpected_exits"] == [] and summary["stray_processes"] == 0


def test_a_redis_restart_mid_run_loses_no_acknowledged_task_and_workers_ride_it_out():
    chaos = Chaos(
        tasks=150,
        workers=3,
        task_secs=0.1,
        kill_every_secs=(2.0, 4.0),
        backlog=50,
        redis_restart=True,
        redis_down_secs=1.0,
    )

    summary = run_chaos(chaos)

    assert summary["problems"] == [], shown(summary)
    assert summary["submitted"] == summary["completed"] == 150  # every acknowledged task
    restart = summary["redis_restart"]
    assert restart["ready_503_after_secs"] is not None, shown(summary)  # 503 while down …
    assert restart["ready_200_after_up_secs"] is not None, shown(summary)  # … 200 once back
    assert summary["unexpected_exits"] == []  # no worker needed the supervisor for it
    assert summary["duplicate_runs"] <= summary["kills"]
