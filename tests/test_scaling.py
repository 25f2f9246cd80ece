"""The scaling signal: upstream's examples (§10.3), pure, and computed from a real town's indexes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from tinytown.core import defaults
from tinytown.core.scaling import ScalingInput, recommend, scaling_signal

from .api_support import SpecClient, app, client  # noqa: F401 - fixtures
from .conftest import write_town

NOW = datetime(2026, 4, 4, 18, 0, tzinfo=UTC)


def signal(
    pending=0, in_flight=0, agents=None, idle_last_active=(), max_agents=10, idle_timeout_secs=300
):
    return scaling_signal(
        ScalingInput(
            town="t",
            now=NOW,
            pending_tasks=pending,
            in_flight_tasks=in_flight,
            agents_by_state=agents or {},
            idle_last_active=idle_last_active,
            max_agents=max_agents,
            idle_timeout_secs=idle_timeout_secs,
        )
    )


# --- pure: upstream's worked examples ---------------------------------------------------------


def test_starting_agent_with_two_pending_tasks_scales_up():
    s = signal(pending=2, agents={"starting": 1})
    assert (
        s["pending_tasks"],
        s["in_flight_tasks"],
        s["queue_depth"],
        s["active_agents"],
        s["desired_agents"],
    ) == (2, 0, 2, 1, 2)
    assert s["scaling_recommendation"] == "scale_up"


def test_one_idle_agent_past_the_idle_timeout_with_no_work_scales_to_zero():
    s = signal(
        agents={"idle": 1}, idle_last_active=[NOW - timedelta(seconds=10)], idle_timeout_secs=1
    )
    assert s["queue_depth"] == 0 and s["active_agents"] == 1 and s["idle_agents"] == 1
    assert s["scaling_recommendation"] == "scale_to_zero"


def test_one_pending_one_in_flight_scales_up_to_two():
    s = signal(pending=1, in_flight=1)
    assert s["desired_agents"] == 2 and s["scaling_recommendation"] == "scale_up"


def test_nothing_at_all_scales_to_zero_vacuously():
    assert signal()["scaling_recommendation"] == "scale_to_zero"


# --- pure: the rules ------------------------------------------------------------------------


@pytest.mark.parametrize("pending, in_flight", [(1, 0), (0, 1), (3, 2)])
def test_never_scale_to_zero_while_anything_is_pending_or_in_flight(pending, in_flight):
    s = signal(pending=pending, in_flight=in_flight, max_agents=0)  # desired is 0 here
    assert s["desired_agents"] == 0
    assert s["scaling_recommendation"] != "scale_to_zero"


def test_a_task_held_by_a_dead_worker_keeps_the_town_awake():
    s = signal(in_flight=1, agents={"stopped": 1})
    assert s["scaling_recommendation"] == "scale_up" and s["desired_agents"] == 1


def test_desired_is_capped_by_max_agents():
    s = signal(pending=50, max_agents=3, agents={"working": 3})
    assert (
        s["desired_agents"] == 3
        and s["scaling_recommendation"] == "steady"
        and s["busy_agents"] == 3
    )


def test_surplus_agents_with_nothing_pending_scale_down():
    s = signal(in_flight=1, agents={"working": 1, "idle": 2})
    assert s["scaling_recommendation"] == "scale_down"


def test_surplus_agents_with_work_pending_stay_steady():
    assert recommend(desired=1, active=3, pending=1, in_flight=0, idle=False) == "steady"


def test_idle_agents_not_yet_past_the_timeout_are_not_scaled_to_zero():
    s = signal(
        agents={"idle": 2},
        idle_last_active=[NOW - timedelta(seconds=10), NOW - timedelta(seconds=900)],
    )
    assert s["scaling_recommendation"] == "scale_down"


def test_a_working_agent_is_never_all_idle():
    s = signal(agents={"working": 1}, max_agents=0)
    assert s["scaling_recommendation"] != "scale_to_zero"


def test_idle_timeout_zero_means_scale_to_zero_only_with_no_active_agents():
    assert signal(agents={"idle": 1}, idle_timeout_secs=0)["scaling_recommendation"] == "scale_down"
    assert (
        signal(agents={"stopped": 4}, idle_timeout_secs=0)["scaling_recommendation"]
        == "scale_to_zero"
    )


def test_cold_agents_are_reported_not_active():
    s = signal(agents={"cold": 2})
    assert s["cold_agents"] == 2 and s["active_agents"] == 0


# --- from a real town ----------------------------------------------------------------------


def test_scaling_counts_backlog_assigned_and_running_tasks(client, town):
    agent = town.agents.register("alice", "claude")
    town.agents.set_state(agent.id, "work")
    town.tasks.add("a")
    town.tasks.add("b", agent_id=agent.id)
    running = town.tasks.add("c")
    town.tasks.transition(running.id, "take_shared", set_fields={"assigned_to": agent.id})
    s = client.get("/api/scaling").get_json()
    assert (s["pending_tasks"], s["in_flight_tasks"], s["queue_depth"]) == (2, 1, 3)
    assert (s["active_agents"], s["busy_agents"], s["desired_agents"]) == (1, 1, 3)
    assert s["scaling_recommendation"] == "scale_up" and s["town"] == town.config.name


def test_an_unacknowledged_docket_entry_counts_as_in_flight_not_pending(client, town):
    """Upstream's streams example: two entries, one read and not acknowledged → 1 pending, 1 in flight."""
    town.tasks.add("a")
    town.tasks.add("b")
    town.redis.xreadgroup(defaults.DOCKET_GROUP, "dead-worker", {town.keys.docket: ">"}, count=1)
    s = client.get("/api/scaling").get_json()
    assert (s["pending_tasks"], s["in_flight_tasks"], s["desired_agents"]) == (1, 1, 2)
    assert s["scaling_recommendation"] == "scale_up"


def test_a_held_entry_whose_task_is_gone_still_blocks_scale_to_zero(client, town):
    task = town.tasks.add("a")
    town.redis.xreadgroup(defaults.DOCKET_GROUP, "dead-worker", {town.keys.docket: ">"}, count=1)
    town.tasks.remove_from_backlog(task.id)
    s = client.get("/api/scaling").get_json()
    assert s["pending_tasks"] == 0 and s["in_flight_tasks"] == 1
    assert s["scaling_recommendation"] != "scale_to_zero"


def test_an_empty_town_with_an_idle_agent_past_its_timeout_scales_to_zero(tmp_path, redis_url):
    from tinytown.api import create_app
    from tinytown.config import load_config
    from tinytown.store import Town

    write_town(
        tmp_path,
        redis_url,
        tables="[agent]\nidle_timeout_secs = 1\nheartbeat_interval_secs = 1\nclaim_timeout_secs = 5\n",
    )
    town = Town.connect(load_config(tmp_path, env={}))
    agent = town.agents.register("alice", "claude")
    town.agents.set_state(
        agent.id,
        "ready",
        last_active_at=(datetime.now(UTC) - timedelta(seconds=10)).isoformat(),
    )
    s = SpecClient(create_app(town.config, town=town)).get("/api/scaling").get_json()
    assert (s["queue_depth"], s["active_agents"], s["idle_agents"]) == (0, 1, 1)
    assert s["scaling_recommendation"] == "scale_to_zero"


def test_scaling_reads_do_not_depend_on_queue_length(client, town):
    """Same Redis commands at 0 and at 2 000 queued tasks: only O(1) index reads."""

    def commands_for_one_request() -> dict:
        before = {k: v["calls"] for k, v in town.redis.info("commandstats").items()}
        client.get("/api/scaling")
        after = town.redis.info("commandstats")
        return {
            k: v["calls"] - before.get(k, 0)
            for k, v in after.items()
            if v["calls"] - before.get(k, 0)
        }

    empty = commands_for_one_request()
    pipe = town.redis.pipeline(transaction=False)
    for i in range(2000):
        pipe.rpush(town.keys.backlog, f"id{i}")
        pipe.zadd(town.keys.tasks_in_state("pending"), {f"id{i}": i})
    pipe.execute()
    full = commands_for_one_request()
    full.pop("cmdstat_info", None), empty.pop("cmdstat_info", None)
    assert full == empty
    assert not any(
        k in full
        for k in (
            "cmdstat_keys",
            "cmdstat_scan",
            "cmdstat_zrange",
            "cmdstat_lrange",
            "cmdstat_hgetall",
        )
    )
