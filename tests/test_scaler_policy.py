"""The scaler's pure policy, as a specification: plain data in, decisions out.

No Docker, no HTTP and no clock: every function takes ``now``. What needs a real engine (starting,
draining, restarting and removing containers) is covered by the Docker integration tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tinytown.scaler.containers import Worker, container_health, worker_from_attrs
from tinytown.scaler.crash_loops import CrashWatch, crash_limited, is_crash, watch_exits
from tinytown.scaler.epoch import epoch_secs
from tinytown.scaler.errors import Malformed
from tinytown.scaler.health import (
    Verdict,
    drain_veto,
    evidence_conflicts,
    health_verdict,
    health_veto,
    next_failure_count,
)
from tinytown.scaler.memory import ContainerMemory, State
from tinytown.scaler.model import Config, Outpost
from tinytown.scaler.outposts import worker_healthcheck
from tinytown.scaler.placement import Breaker, OutpostView, choose_outposts
from tinytown.scaler.policy import (
    clamp_target,
    drain_candidates,
    exited_to_remove,
    plan_pass,
    scale_down_gate,
)
from tinytown.scaler.state_file import state_path
from tinytown.scaler.wire import Agent, Signal, parse_agents, parse_signal

NOW = 1_800_000_000.0
HOUR = 3600.0


def signal_body(**overrides):
    body = {
        "town": "demo",
        "timestamp": "2027-01-15T08:00:00Z",
        "queue_depth": 2,
        "pending_tasks": 2,
        "in_flight_tasks": 0,
        "active_agents": 0,
        "cold_agents": 0,
        "desired_agents": 2,
        "max_agents": 10,
        "scaling_recommendation": "scale_up",
        "idle_agents": 0,
        "busy_agents": 0,
    }
    body.update(overrides)
    return body


def signal(**overrides) -> Signal:
    return parse_signal(signal_body(**overrides))


def worker(
    n: int,
    outpost: str = "local",
    status: str = "running",
    age_secs: float = HOUR,
    cost: float = 0.0,
    health: str | None = "healthy",
) -> Worker:
    """A worker container; ``health`` is its Docker health (None: it has no healthcheck)."""
    return Worker(
        f"c{n}",
        f"tt-demo-{outpost}-{n}",
        outpost,
        f"a{n}",
        status,
        NOW - age_secs,
        cost,
        health=health,
    )


def agent(
    n: int,
    state: str = "Idle",
    task: str | None = None,
    heartbeat_age_secs: float | None = 1.0,
    alive: bool | None = None,
) -> Agent:
    beat = None if heartbeat_age_secs is None else NOW - heartbeat_age_secs
    return Agent(f"a{n}", state, task, beat, alive=alive)


def view(
    name: str,
    live: int = 0,
    max_workers: int = 10,
    cost: float = 0.0,
    available: bool = True,
    hold: str | None = None,
) -> OutpostView:
    return OutpostView(name, max_workers, cost, available, live, hold)


# --- the scaling signal ----------------------------------------------------------------------
def test_a_valid_signal_parses():
    sig = signal()
    assert (sig.town, sig.desired_agents, sig.scaling_recommendation) == ("demo", 2, "scale_up")


def test_a_signal_without_idle_and_busy_agents_parses_so_upstream_townhall_works():
    body = signal_body()
    del body["idle_agents"], body["busy_agents"]
    assert parse_signal(body).idle_agents is None


@pytest.mark.parametrize(
    "field",
    [
        "town",
        "timestamp",
        "queue_depth",
        "pending_tasks",
        "in_flight_tasks",
        "active_agents",
        "cold_agents",
        "desired_agents",
        "max_agents",
        "scaling_recommendation",
    ],
)
def test_a_signal_missing_a_field_is_malformed(field):
    body = signal_body()
    del body[field]
    with pytest.raises(Malformed, match=field):
        parse_signal(body)


@pytest.mark.parametrize("value", [True, -1, 2.0, "2", None])
def test_a_count_that_is_not_a_whole_number_at_least_zero_is_malformed(value):
    with pytest.raises(Malformed, match="desired_agents"):
        parse_signal(signal_body(desired_agents=value))


def test_an_unknown_recommendation_is_malformed():
    with pytest.raises(Malformed, match="scaling_recommendation"):
        parse_signal(signal_body(scaling_recommendation="scale_sideways"))


def test_a_timestamp_that_is_not_rfc3339_is_malformed():
    with pytest.raises(Malformed, match="timestamp"):
        parse_signal(signal_body(timestamp="yesterday"))


def test_a_present_but_wrong_extra_field_is_malformed():
    with pytest.raises(Malformed, match="idle_agents"):
        parse_signal(signal_body(idle_agents="none"))


@pytest.mark.parametrize("body", [[], "scale_up", None, 3])
def test_a_body_that_is_not_an_object_is_malformed(body):
    with pytest.raises(Malformed):
        parse_signal(body)


# --- the agent list --------------------------------------------------------------------------
def agents_body(*items):
    return {"agents": list(items), "count": len(items)}


def agent_item(**overrides):
    item = {
        "id": "a1",
        "name": "w1",
        "nickname": None,
        "role_id": "worker",
        "parent_agent_id": None,
        "spawn_mode": "fresh",
        "cli": "claude",
        "state": "Idle",
        "current_scope": None,
        "current_task": None,
        "last_heartbeat": "2027-01-15T08:00:00.123456+00:00",
    }
    item.update(overrides)
    return item


def test_heartbeats_with_z_or_offset_parse_to_the_same_moment():
    agents = parse_agents(
        agents_body(
            agent_item(id="a1", last_heartbeat="2027-01-15T08:00:00Z"),
            agent_item(id="a2", last_heartbeat="2027-01-15T09:00:00+01:00"),
        )
    )
    assert agents["a1"].last_heartbeat == agents["a2"].last_heartbeat


def test_an_agent_without_current_task_is_malformed_because_busy_cannot_be_told():
    item = agent_item()
    del item["current_task"]
    with pytest.raises(Malformed, match="current_task"):
        parse_agents(agents_body(item))


def test_a_lowercase_agent_state_is_malformed():
    with pytest.raises(Malformed, match="state"):
        parse_agents(agents_body(agent_item(state="idle")))


def test_an_unparseable_heartbeat_is_malformed():
    with pytest.raises(Malformed, match="last_heartbeat"):
        parse_agents(agents_body(agent_item(last_heartbeat="5 seconds ago")))


def test_a_null_heartbeat_is_allowed():
    assert parse_agents(agents_body(agent_item(last_heartbeat=None)))["a1"].last_heartbeat is None


def test_alive_and_the_agents_own_heartbeat_fields_are_read_when_present():
    (a,) = parse_agents(
        agents_body(agent_item(alive=False, heartbeat_interval_secs=5, heartbeat_age_secs=42.5))
    ).values()
    assert (a.alive, a.heartbeat_interval_secs, a.heartbeat_age_secs) == (False, 5, 42.5)


def test_without_alive_an_agent_is_judged_by_its_heartbeats_age_as_before():
    (a,) = parse_agents(agents_body(agent_item())).values()
    assert (a.alive, a.heartbeat_interval_secs, a.heartbeat_age_secs) == (None, None, None)


@pytest.mark.parametrize(
    "field, value",
    [
        ("alive", "yes"),
        ("alive", 1),
        ("heartbeat_interval_secs", 0),
        ("heartbeat_interval_secs", "5"),
        ("heartbeat_interval_secs", True),
        ("heartbeat_interval_secs", 2.5),
        ("heartbeat_age_secs", "old"),
        ("heartbeat_age_secs", False),
    ],
)
def test_an_alive_or_heartbeat_field_of_the_wrong_type_is_malformed(field, value):
    with pytest.raises(Malformed, match=field):
        parse_agents(agents_body(agent_item(**{field: value})))


def test_null_heartbeat_age_is_allowed():
    assert (
        parse_agents(agents_body(agent_item(heartbeat_age_secs=None)))["a1"].heartbeat_age_secs
        is None
    )


# --- times and containers --------------------------------------------------------------------
def test_docker_nanosecond_times_parse():
    assert epoch_secs("2027-01-15T08:00:00.123456789Z") == pytest.approx(
        epoch_secs("2027-01-15T08:00:00Z") + 0.123456789
    )


def test_a_worker_from_docker_ps_attributes_reads_labels_and_status():
    attrs = {
        "Id": "abc",
        "Names": ["/tt-demo-local-1"],
        "State": "running",
        "Created": 100,
        "Labels": {
            "tinytown.outpost": "local",
            "tinytown.agent_id": "a1",
            "tinytown.started_at": "2027-01-15T08:00:00Z",
            "tinytown.cost_per_hour": "0.5",
        },
    }
    w = worker_from_attrs(attrs, Outpost())
    assert (w.name, w.agent_id, w.status, w.cost_per_hour) == (
        "tt-demo-local-1",
        "a1",
        "running",
        0.5,
    )
    assert w.started_at == epoch_secs("2027-01-15T08:00:00Z")


def test_a_worker_from_docker_inspect_attributes_knows_when_it_finished():
    attrs = {
        "Id": "abc",
        "Name": "/w",
        "Created": "2027-01-15T08:00:00.5Z",
        "State": {"Status": "exited", "FinishedAt": "2027-01-15T09:00:00.000000001Z"},
        "Config": {"Labels": {"tinytown.started_at": "2027-01-15T08:00:00Z"}},
    }
    w = worker_from_attrs(attrs, Outpost(cost_per_hour=2.0))
    assert w.status == "exited" and not w.live
    assert w.cost_so_far(NOW) == pytest.approx(2.0)


def test_an_exited_worker_from_docker_inspect_knows_its_exit_code_and_how_long_it_ran():
    attrs = {
        "Id": "abc",
        "Name": "/w",
        "Created": "2027-01-15T08:00:00Z",
        "State": {
            "Status": "exited",
            "ExitCode": 3,
            "StartedAt": "2027-01-15T08:00:01Z",
            "FinishedAt": "2027-01-15T08:00:03.5Z",
        },
    }
    w = worker_from_attrs(attrs, Outpost())
    assert (w.exit_code, w.ran_secs) == (3, 2.5)


@pytest.mark.parametrize(
    "status, health",
    [
        ("Up 5 minutes (healthy)", "healthy"),
        ("Up 2 hours (unhealthy)", "unhealthy"),
        ("Up Less than a second (health: starting)", "starting"),
        ("Up 5 minutes", None),
    ],
)
def test_docker_health_is_read_from_docker_ps_status(status, health):
    attrs = {"Id": "abc", "Names": ["/w"], "State": "running", "Status": status, "Created": 100}
    assert worker_from_attrs(attrs, Outpost()).health == health


def test_docker_health_is_read_from_docker_inspect_and_none_without_a_healthcheck():
    inspected = {
        "Id": "abc",
        "Name": "/w",
        "State": {"Status": "running", "Health": {"Status": "unhealthy"}},
    }
    assert container_health(inspected) == "unhealthy"
    assert container_health({"State": {"Status": "running"}}) is None


def test_the_workers_healthcheck_runs_the_health_file_check_once_per_heartbeat_interval():
    check = worker_healthcheck(Config(heartbeat_interval_secs=2, start_grace_secs=30))
    assert check["test"] == ["CMD", "python", "-P", "-m", "tinytown.worker.health_file"]
    assert (check["interval"], check["start_period"]) == (2_000_000_000, 30_000_000_000)
    assert check["retries"] >= 1 and check["timeout"] >= 1_000_000_000


def test_cost_so_far_of_a_live_worker_runs_until_now():
    assert worker(1, age_secs=1800, cost=0.5).cost_so_far(NOW) == pytest.approx(0.25)


# --- target ----------------------------------------------------------------------------------
@pytest.mark.parametrize("desired, expected", [(0, 1), (3, 3), (9, 5)])
def test_target_is_desired_agents_clamped_to_min_and_max(desired, expected):
    assert clamp_target(desired, 1, 5) == expected


def test_target_is_zero_when_nothing_is_wanted_and_min_is_zero():
    assert clamp_target(0, 0, 10) == 0


# --- where new workers go --------------------------------------------------------------------
def test_new_workers_fill_the_first_outpost_then_overflow_to_the_next():
    placement = choose_outposts(3, [view("vm", live=1, max_workers=2), view("cloud")], 0.0, None)
    assert placement.outposts == ("vm", "cloud", "cloud")
    assert placement.unplaced == 0


def test_an_outpost_whose_breaker_is_open_is_skipped():
    placement = choose_outposts(1, [view("vm", available=False), view("cloud")], 0.0, None)
    assert placement.outposts == ("cloud",)


def test_starts_stop_before_the_cost_cap_would_be_exceeded():
    placement = choose_outposts(5, [view("cloud", cost=0.5)], 0.5, 2.0)
    assert placement.outposts == ("cloud", "cloud", "cloud")
    assert placement.unplaced == 2
    assert "cost cap" in placement.reason


def test_a_start_the_cap_allows_exactly_is_made():
    assert choose_outposts(1, [view("cloud", cost=0.1)], 0.2, 0.3).outposts == ("cloud",)


def test_under_the_cost_cap_a_cheaper_later_outpost_still_takes_the_start():
    placement = choose_outposts(1, [view("big", cost=1.0), view("small", cost=0.1)], 0.0, 0.5)
    assert placement.outposts == ("small",)


def test_when_every_outpost_is_full_the_reason_says_so():
    placement = choose_outposts(1, [view("vm", live=2, max_workers=2)], 0.0, None)
    assert placement.unplaced == 1
    assert "max_workers" in placement.reason


def test_an_outpost_holding_starts_is_skipped_and_the_next_one_takes_the_start():
    placement = choose_outposts(1, [view("vm", hold="crash loop"), view("cloud")], 0.0, None)
    assert placement.outposts == ("cloud",)


def test_when_the_only_outpost_holds_starts_the_reason_says_why():
    placement = choose_outposts(1, [view("vm", hold="3 workers in a row exited")], 0.0, None)
    assert placement.unplaced == 1
    assert placement.reason == "vm holds starts (3 workers in a row exited)"


def test_when_no_outpost_is_available_the_reason_says_so():
    placement = choose_outposts(2, [view("vm", available=False)], 0.0, None)
    assert placement.outposts == ()
    assert "no outpost available" in placement.reason


# --- circuit breaker -------------------------------------------------------------------------
def test_a_failure_opens_the_breaker_for_the_backoff():
    b = Breaker().failed(NOW, "refused", 30, 600)
    assert b.is_open(NOW + 29) and not b.is_open(NOW + 30)


def test_the_backoff_doubles_per_failure_up_to_the_cap():
    b = Breaker()
    backoffs = []
    for _ in range(7):
        b = b.failed(NOW, "refused", 30, 600)
        backoffs.append(b.open_until - NOW)
    assert backoffs == [30, 60, 120, 240, 480, 600, 600]


def test_a_success_closes_the_breaker():
    b = Breaker().failed(NOW, "refused", 30, 600).succeeded()
    assert not b.is_open(NOW) and b.failures == 0


# --- scale-down gate: signal, cooldown, hysteresis -------------------------------------------
def gate(
    recommendation="scale_down", surplus=1, passes=5, last_up=None, now=NOW, cooldown=300, after=3
):
    return scale_down_gate(recommendation, surplus, passes, last_up, now, cooldown, after)


@pytest.mark.parametrize("recommendation", ["scale_up", "steady"])
def test_no_drain_unless_the_signal_says_scale_down_or_scale_to_zero(recommendation):
    result = gate(recommendation)
    assert not result.allowed and result.surplus_passes == 0


@pytest.mark.parametrize("recommendation", ["scale_down", "scale_to_zero"])
def test_a_lasting_surplus_on_a_down_signal_may_drain(recommendation):
    assert gate(recommendation).allowed


def test_a_surplus_must_persist_for_the_configured_passes():
    assert [gate(passes=p).allowed for p in (0, 1, 2)] == [False, False, True]


def test_no_drain_within_the_cooldown_after_a_start():
    assert not gate(last_up=NOW - 299).allowed
    assert gate(last_up=NOW - 300).allowed


def test_jitter_between_scale_down_and_steady_never_drains():
    passes, drained = 0, False
    for recommendation in ["scale_down", "steady"] * 10:
        result = gate(recommendation, passes=passes)
        passes, drained = result.surplus_passes, drained or result.allowed
    assert not drained


def test_a_surplus_that_vanishes_resets_the_count():
    assert gate(surplus=0, passes=2).surplus_passes == 0


# --- which worker may be drained -------------------------------------------------------------
def test_only_idle_workers_without_a_task_are_drained():
    workers = [worker(n) for n in range(1, 7)]
    agents = {
        a.id: a
        for a in [
            agent(1, "Working", "t1"),
            agent(2, "Starting"),
            agent(3, "Idle", "t3"),
            agent(4, "Draining"),
            agent(5, "Paused"),
            agent(6, "Idle"),
        ]
    }
    assert [w.container_id for w in drain_candidates(workers, agents, 6, ["local"])] == ["c6"]


def test_the_drain_veto_lets_only_an_idle_agent_without_a_task_be_drained():
    assert drain_veto(agent(1)) is None
    assert drain_veto(agent(1, "Working", "t1")) == "agent Working with task t1"
    assert drain_veto(None) == "agent not registered"


def test_a_worker_whose_agent_is_unknown_is_never_drained():
    assert drain_candidates([worker(1)], {}, 1, ["local"]) == []


@pytest.mark.parametrize("health", ["unhealthy", "starting", None])
def test_an_idle_worker_is_drained_only_when_its_container_says_it_is_healthy(health):
    assert drain_candidates([worker(1, health=health)], {"a1": agent(1)}, 1, ["local"]) == []


def test_trust_townhall_alone_drains_an_idle_worker_without_a_healthcheck():
    drained = drain_candidates(
        [worker(1, health=None)], {"a1": agent(1)}, 1, ["local"], trust_townhall_alone=True
    )
    assert [w.container_id for w in drained] == ["c1"]


def test_an_idle_agent_townhall_says_is_not_alive_is_never_drained():
    assert drain_candidates([worker(1)], {"a1": agent(1, alive=False)}, 1, ["local"]) == []
    assert drain_veto(agent(1, alive=False)) == "agent not alive"


def test_the_health_veto_names_what_docker_says():
    assert health_veto("healthy", False) is None
    assert health_veto("unhealthy", True) == "Docker health unhealthy"
    assert "no Docker healthcheck" in health_veto(None, False)


def test_no_more_workers_are_drained_than_the_surplus():
    workers = [worker(n) for n in range(1, 4)]
    agents = {f"a{n}": agent(n) for n in range(1, 4)}
    assert len(drain_candidates(workers, agents, 2, ["local"])) == 2


def test_the_least_preferred_outpost_is_drained_first():
    workers = [worker(1, "vm"), worker(2, "cloud")]
    agents = {"a1": agent(1), "a2": agent(2)}
    drained = drain_candidates(workers, agents, 1, ["vm", "cloud"])
    assert [w.outpost for w in drained] == ["cloud"]


# --- health ----------------------------------------------------------------------------------
UNHEALTHY = worker(1, health="unhealthy")


def verdict(w=None, a="default", quiet_since=None, trust=False):
    w = w or worker(1)
    a = agent(1) if a == "default" else a
    return health_verdict(w, a, NOW, 90, 120, quiet_since, trust)


def test_a_fresh_heartbeat_is_healthy():
    assert verdict().healthy


def test_a_worker_that_stopped_itself_a_moment_ago_is_leaving_not_a_disagreement():
    # its record says stopped (not alive) while its container runs the last of its exit
    just = verdict(a=agent(1, "Stopped", heartbeat_age_secs=0.2, alive=False))
    assert not just.judged and just.unknown is None and "leaves" in just.reason
    long_ago = verdict(a=agent(1, "Stopped", heartbeat_age_secs=300, alive=False))
    assert long_ago.unknown == "evidence_inconsistent"  # still running minutes later: say so
    assert verdict(UNHEALTHY, a=agent(1, "Stopped", heartbeat_age_secs=0.2, alive=False)).judged


def test_a_heartbeat_older_than_the_window_is_a_failure_when_docker_agrees():
    v = verdict(UNHEALTHY, a=agent(1, heartbeat_age_secs=91))
    assert v.judged and not v.healthy and "heartbeat 91s old" in v.reason
    assert "Docker health unhealthy" in v.reason and v.unknown is None


def test_an_agent_in_error_is_a_failure_when_docker_agrees_even_with_a_fresh_heartbeat():
    assert not verdict(UNHEALTHY, a=agent(1, "Error")).healthy


def test_a_missing_agent_or_heartbeat_is_a_failure_when_docker_agrees():
    assert not verdict(UNHEALTHY, a=None).healthy
    assert not verdict(UNHEALTHY, a=agent(1, heartbeat_age_secs=None)).healthy


def test_townhall_saying_not_alive_is_a_failure_when_docker_agrees_whatever_the_heartbeat_age():
    v = verdict(UNHEALTHY, a=agent(1, heartbeat_age_secs=5, alive=False))
    assert v.judged and not v.healthy and "agent not alive" in v.reason


def test_townhall_saying_alive_outweighs_an_old_heartbeat_by_the_scalers_window():
    assert verdict(a=agent(1, heartbeat_age_secs=500, alive=True)).healthy


# Two witnesses that disagree: the verdict is unknown, never a failure.
@pytest.mark.parametrize(
    "a",
    [
        None,
        agent(1, heartbeat_age_secs=600),
        agent(1, heartbeat_age_secs=None),
        agent(1, "Error"),
        agent(1, alive=False),
    ],
    ids=["not registered", "old heartbeat", "no heartbeat", "Error", "not alive"],
)
def test_townhall_saying_dead_while_docker_says_healthy_is_unknown_not_a_failure(a):
    v = verdict(worker(1, health="healthy"), a=a)
    assert (v.judged, v.healthy, v.unknown) == (False, True, "evidence_inconsistent")
    assert "Docker health is healthy" in v.reason


def test_docker_saying_unhealthy_while_townhall_says_alive_is_unknown_not_a_failure():
    v = verdict(UNHEALTHY, a=agent(1, heartbeat_age_secs=1))
    assert (v.judged, v.unknown) == (False, "evidence_inconsistent")
    assert "townhall says the agent is alive" in v.reason


def test_docker_health_starting_is_not_judged_even_when_townhall_says_dead():
    v = verdict(worker(1, health="starting"), a=None)
    assert not v.judged and v.unknown is None


def test_a_container_without_a_healthcheck_is_not_restarted_on_townhalls_word_alone():
    v = verdict(worker(1, health=None), a=agent(1, heartbeat_age_secs=600))
    assert (v.judged, v.unknown) == (False, "evidence_missing")
    assert "no Docker healthcheck" in v.reason and "trust_townhall_alone" in v.reason


def test_trust_townhall_alone_judges_a_container_without_a_healthcheck_by_townhall():
    v = verdict(worker(1, health=None), a=agent(1, heartbeat_age_secs=600), trust=True)
    assert v.judged and not v.healthy


def test_a_container_without_a_healthcheck_whose_agent_is_alive_is_healthy():
    assert verdict(worker(1, health=None)).healthy


def test_a_container_within_its_start_grace_is_not_judged():
    assert not verdict(worker(1, age_secs=60), a=None).judged


def test_a_just_restarted_container_is_not_judged():
    assert not verdict(a=None, quiet_since=NOW - 10).judged


def test_failures_count_up_reset_when_healthy_and_hold_when_not_judged():
    fail, ok, skip = (
        Verdict(True, False, "x"),
        Verdict(True, True, "ok"),
        Verdict(False, True, "young"),
    )
    assert next_failure_count(2, fail) == 3
    assert next_failure_count(2, ok) == 0
    assert next_failure_count(2, skip) == 2


def test_an_unknown_verdict_starts_the_failure_count_again():
    unknown = Verdict(False, True, "they disagree", "evidence_inconsistent")
    assert next_failure_count(2, unknown) == 0


# --- townhall's answers against each other ---------------------------------------------------
def conflicts(sig, agents, workers=(), grace=120):
    return evidence_conflicts(sig, {a.id: a for a in agents}, list(workers), NOW, grace)


def test_an_empty_agent_list_while_the_signal_counts_two_live_agents_is_a_contradiction():
    found = conflicts(signal(active_agents=2, busy_agents=2), [], [worker(1), worker(2)])
    assert found[0] == (
        "/api/scaling says active_agents=2 but /v1/agents lists 0 live agent(s) (tolerance 1)"
    )
    assert "busy_agents=2" in found[1]


def test_counts_that_agree_within_the_race_tolerance_are_consistent():
    assert (
        conflicts(signal(active_agents=2, busy_agents=1), [agent(1), agent(2, "Working", "t2")])
        == ()
    )
    assert conflicts(signal(active_agents=3, busy_agents=1), [agent(1), agent(2)]) == ()


def test_busy_agents_that_the_list_does_not_show_working_is_a_contradiction():
    found = conflicts(signal(active_agents=3, busy_agents=3), [agent(n) for n in (1, 2, 3)])
    assert found == (
        "/api/scaling says busy_agents=3 but /v1/agents lists 0 Working agent(s) (tolerance 1)",
    )


def test_agents_townhall_lists_as_not_alive_or_stopped_do_not_count_as_live():
    listed = [agent(1, alive=False), agent(2, alive=False), agent(3, "Stopped")]
    assert "lists 0 live" in conflicts(signal(active_agents=2, busy_agents=0), listed)[0]


def test_containers_within_their_start_grace_widen_the_tolerance():
    young = [worker(n, age_secs=10) for n in (1, 2)]
    assert (
        conflicts(signal(active_agents=0, busy_agents=0), [agent(n) for n in (1, 2, 3)], young)
        == ()
    )


def test_an_upstream_signal_without_busy_agents_is_checked_on_active_agents_only():
    body = signal_body(active_agents=1)
    del body["idle_agents"], body["busy_agents"]
    assert conflicts(parse_signal(body), [agent(1, "Working", "t1")]) == ()


# --- exited containers -----------------------------------------------------------------------
def test_exited_workers_beyond_the_newest_k_per_outpost_are_removed():
    workers = [worker(n, "vm", "exited", age_secs=n * 60) for n in range(1, 6)]
    workers += [worker(9, "cloud", "exited"), worker(10, "vm", "running", age_secs=99_999)]
    doomed = exited_to_remove(workers, 3)
    assert sorted(w.container_id for w in doomed) == ["c4", "c5"]


# --- crash loops -----------------------------------------------------------------------------
QUICK = 120.0


def exited(n: int, code: int, ran_secs: float = 1.0, outpost: str = "local") -> Worker:
    return Worker(
        f"c{n}",
        f"tt-demo-{outpost}-{n}",
        outpost,
        f"a{n}",
        "exited",
        NOW - 60,
        0.0,
        finished_at=NOW - 60 + n,
        exit_code=code,
        ran_secs=ran_secs,
    )


def watch(exits, previous=None, now=NOW, after=3):
    return watch_exits(previous or CrashWatch(), exits, now, after, QUICK, 30, 600)


def test_only_a_quick_non_zero_exit_is_a_crash():
    assert is_crash(exited(1, 3), QUICK)
    assert is_crash(exited(1, 4, ran_secs=65), QUICK)  # Redis unreachable after retries
    assert not is_crash(exited(1, 0), QUICK)  # idle exit
    assert not is_crash(exited(1, 137, ran_secs=3 * HOUR), QUICK)


def test_three_quick_non_zero_exits_in_a_row_hold_starts_for_the_breaker_backoff():
    result, opened = watch([exited(1, 3), exited(2, 3), exited(3, 3)])
    assert opened.container_id == "c3" and result.streak == 3 and result.last_exit_code == 3
    assert result.hold.is_open(NOW + 29) and not result.hold.is_open(NOW + 30)
    assert "exited within 120s, the last with code 3" in result.hold.last_error


def test_two_quick_exits_do_not_hold_starts_yet():
    result, opened = watch([exited(1, 3), exited(2, 3)])
    assert opened is None and result.streak == 2 and not result.hold.is_open(NOW)


def test_an_exit_0_between_crashes_starts_the_count_again():
    result, opened = watch([exited(1, 3), exited(2, 3), exited(3, 0), exited(4, 3)])
    assert opened is None and result.streak == 1


def test_exits_are_counted_in_the_order_they_happened():
    result, _ = watch([exited(3, 0), exited(1, 3), exited(2, 3)])
    assert result.streak == 0  # the exit 0 came last


def test_a_crash_after_the_hold_holds_again_for_twice_as_long():
    first, _ = watch([exited(n, 3) for n in (1, 2, 3)])
    later = NOW + 31
    again, opened = watch([exited(4, 4)], previous=first, now=later)
    assert opened.container_id == "c4" and again.hold.failures == 2
    assert again.hold.open_until == later + 60


def test_crash_loop_after_exits_0_never_holds():
    result, opened = watch([exited(n, 3) for n in range(1, 10)], after=0)
    assert opened is None and not result.hold.is_open(NOW)


def test_an_outpost_in_a_held_crash_loop_takes_no_worker():
    held, _ = watch([exited(n, 3) for n in (1, 2, 3)])
    limited = crash_limited(view("local"), held, NOW, 3)
    assert limited.hold and "code 3" in limited.hold
    assert choose_outposts(2, [limited], 0.0, None).outposts == ()


def test_after_the_hold_an_outpost_still_in_a_crash_loop_takes_one_trial_worker_per_pass():
    held, _ = watch([exited(n, 3) for n in (1, 2, 3)])
    limited = crash_limited(view("local", live=1), held, NOW + 31, 3)
    assert limited.hold is None
    assert choose_outposts(3, [limited], 0.0, None).outposts == ("local",)


# --- a whole pass ----------------------------------------------------------------------------
def plan(sig=None, agents="idle", workers=(), outposts=None, state=None, **config):
    workers = list(workers)
    if agents == "idle":
        agents = {w.agent_id: agent(int(w.agent_id[1:])) for w in workers}
    outposts = outposts or [view("local", live=sum(w.live for w in workers))]
    return plan_pass(
        Config(**config),
        sig or signal(),
        agents,
        workers,
        outposts,
        state or State(town="demo"),
        NOW,
    )


def test_a_pass_starts_the_shortfall():
    p = plan(signal(desired_agents=3), workers=[worker(1)])
    assert p.placement.outposts == ("local", "local")


def test_a_pass_keeps_min_workers_even_when_the_signal_says_scale_to_zero():
    p = plan(signal(desired_agents=0, scaling_recommendation="scale_to_zero"), min_workers=1)
    assert p.placement.outposts == ("local",)


def test_a_pass_never_starts_beyond_max_workers():
    p = plan(signal(desired_agents=50), max_workers=4)
    assert len(p.placement.outposts) == 4


def test_a_pass_drains_an_idle_surplus_worker_after_the_gate_opens():
    state = State(town="demo", surplus_passes=2)
    p = plan(
        signal(desired_agents=0, scaling_recommendation="scale_to_zero"),
        workers=[worker(1)],
        state=state,
        scale_down_cooldown_secs=0,
    )
    assert [w.container_id for w in p.drains] == ["c1"]


def test_a_pass_never_drains_a_busy_worker_even_on_scale_to_zero():
    state = State(town="demo", surplus_passes=10)
    p = plan(
        signal(desired_agents=0, scaling_recommendation="scale_to_zero"),
        agents={"a1": agent(1, "Working", "t1")},
        workers=[worker(1)],
        state=state,
        scale_down_cooldown_secs=0,
    )
    assert p.gate.allowed and p.drains == ()


def test_a_pass_without_the_agent_list_drains_nobody_and_judges_nobody():
    state = State(town="demo", surplus_passes=10)
    p = plan(
        signal(desired_agents=0, scaling_recommendation="scale_to_zero"),
        agents=None,
        workers=[worker(1)],
        state=state,
        scale_down_cooldown_secs=0,
    )
    assert p.drains == () and p.restarts == () and p.verdicts == {}
    assert p.gate.reason == "agent list unavailable"


def test_a_worker_asked_to_drain_does_not_count_so_no_second_worker_is_drained():
    state = State(
        town="demo",
        surplus_passes=10,
        containers={"c1": ContainerMemory("local", drain_requested_at=NOW - 5)},
    )
    p = plan(
        signal(desired_agents=1, scaling_recommendation="scale_down"),
        workers=[worker(1), worker(2)],
        state=state,
        scale_down_cooldown_secs=0,
    )
    assert p.live == 1 and p.drains == ()


def test_the_third_consecutive_health_failure_restarts_the_container():
    state = State(town="demo", containers={"c1": ContainerMemory("local", health_failures=2)})
    p = plan(agents={"a1": agent(1, heartbeat_age_secs=600)}, workers=[UNHEALTHY], state=state)
    assert [w.container_id for w in p.restarts] == ["c1"]
    assert p.health_failures["c1"] == 3


def test_the_second_consecutive_failure_does_not_restart_yet():
    state = State(town="demo", containers={"c1": ContainerMemory("local", health_failures=1)})
    p = plan(agents={"a1": agent(1, heartbeat_age_secs=600)}, workers=[UNHEALTHY], state=state)
    assert p.restarts == () and p.health_failures["c1"] == 2


def test_a_container_out_of_restarts_is_given_up_instead_of_restarted_again():
    state = State(
        town="demo",
        containers={
            "c1": ContainerMemory("local", health_failures=2, restarts=3, restarted_at=NOW - 600)
        },
    )
    p = plan(agents={"a1": agent(1, heartbeat_age_secs=600)}, workers=[UNHEALTHY], state=state)
    assert p.restarts == ()
    assert [w.container_id for w, _ in p.give_up] == ["c1"]


def test_a_container_marked_in_error_is_replaced_and_not_judged_again():
    state = State(
        town="demo", containers={"c1": ContainerMemory("local", marked_error_at=NOW - 60)}
    )
    p = plan(signal(desired_agents=1), agents={}, workers=[worker(1)], state=state)
    assert p.placement.outposts == ("local",)
    assert "c1" not in p.verdicts


LYING = {
    "sig": signal(
        active_agents=2, busy_agents=2, desired_agents=0, scaling_recommendation="scale_to_zero"
    ),
    "agents": {},
}


def test_a_lying_townhall_restarts_nobody_even_with_unhealthy_containers_at_the_limit():
    state = State(
        town="demo",
        containers={f"c{n}": ContainerMemory("local", health_failures=2) for n in (1, 2)},
    )
    p = plan(
        **LYING, workers=[worker(1, health="unhealthy"), worker(2, health="unhealthy")], state=state
    )
    assert p.restarts == () and p.give_up == ()
    assert p.conflicts and "active_agents=2" in p.conflicts[0]
    assert p.health_failures == {"c1": 0, "c2": 0}  # the count starts again
    assert {v.unknown for v in p.verdicts.values()} == {"evidence_inconsistent"}


def test_a_lying_townhall_drains_nobody_and_the_surplus_count_starts_again():
    state = State(town="demo", surplus_passes=10)
    p = plan(**LYING, workers=[worker(1), worker(2)], state=state, scale_down_cooldown_secs=0)
    assert p.drains == () and not p.gate.allowed and p.gate.surplus_passes == 0
    assert p.gate.reason.startswith("evidence inconsistent: /api/scaling says active_agents=2")


def test_a_lying_townhall_does_not_stop_starts_or_the_removal_of_exited_containers():
    p = plan(
        signal(active_agents=3, busy_agents=0, desired_agents=2),
        agents={},
        workers=[worker(5, status="exited"), worker(6, status="exited")],
        keep_exited=0,
    )
    assert p.conflicts
    assert p.placement.outposts == ("local", "local")
    assert sorted(w.container_id for w in p.removals) == ["c5", "c6"]


def test_a_healthy_container_whose_agent_townhall_calls_dead_is_left_alone_and_reported():
    state = State(town="demo", containers={"c1": ContainerMemory("local", health_failures=2)})
    p = plan(agents={"a1": agent(1, heartbeat_age_secs=600)}, workers=[worker(1)], state=state)
    assert p.restarts == () and p.conflicts == ()
    assert [w.container_id for w in p.unknown] == ["c1"]
    assert p.verdicts["c1"].unknown == "evidence_inconsistent"


def test_a_container_without_a_healthcheck_is_not_restarted_by_default_and_says_why():
    state = State(town="demo", containers={"c1": ContainerMemory("local", health_failures=2)})
    p = plan(
        agents={"a1": agent(1, heartbeat_age_secs=600)},
        workers=[worker(1, health=None)],
        state=state,
    )
    assert p.restarts == () and p.verdicts["c1"].unknown == "evidence_missing"
    p = plan(
        agents={"a1": agent(1, heartbeat_age_secs=600)},
        workers=[worker(1, health=None)],
        state=state,
        trust_townhall_alone=True,
    )
    assert [w.container_id for w in p.restarts] == ["c1"]


def test_the_cost_of_unseen_outposts_counts_against_the_cap():
    p = plan_pass(
        Config(cost_cap_hourly=1.0),
        signal(desired_agents=2),
        {},
        [],
        [view("cloud", cost=0.5)],
        State(town="demo"),
        NOW,
        unseen_hourly=0.6,
    )
    assert p.placement.unplaced == 2


# --- the state file --------------------------------------------------------------------------
def test_the_default_state_file_is_the_towns_own():
    path = state_path(Config(), {"XDG_STATE_HOME": "/var/state"}, "demo")
    assert str(path) == "/var/state/tinytown-scaler/demo/state.json"


@pytest.mark.parametrize("town", ["..", "../../etc", "a/b", ".hidden"])
def test_a_town_name_from_townhall_never_leads_the_state_file_out_of_its_directory(town):
    path = state_path(Config(), {"XDG_STATE_HOME": "/var/state"}, town)
    assert path.parent.parent == Path("/var/state/tinytown-scaler")
    assert not path.parent.name.startswith(".")


def test_an_explicit_state_file_is_used_for_any_town():
    path = state_path(Config(state_file="/srv/s.json"), {}, "demo")
    assert str(path) == "/srv/s.json"


def test_state_survives_a_round_trip_through_json():
    state = State(
        town="demo",
        last_scale_up_at=NOW,
        surplus_passes=2,
        removed_cost=1.5,
        breakers={"vm": Breaker(2, NOW + 60, "refused")},
        last_seen_hourly={"vm": 0.5},
        containers={"c1": ContainerMemory("vm", health_failures=1, restarts=1, exit_counted=True)},
        crash_loops={"vm": CrashWatch(3, Breaker(1, NOW + 30, "exited"), 3)},
    )
    again = State.from_json(json.loads(json.dumps(state.to_json(NOW))))
    assert again == state
