"""`tt agent list|show|kill|restart|prune` and `tt status`: agents alive or dead by their own
heartbeats, through the real console script."""

from __future__ import annotations

import json

import pytest

from tinytown.core.liveness import Beat
from tinytown.core.states import AGENT

LONG_AGO_MS = 10 * 60 * 1000


def beating(town, name, state, *, age_ms=0, agent_id=None):
    """An agent in ``state`` (idle or working) whose last heartbeat was ``age_ms`` ago."""
    agent = town.agents.register(name, "claude", agent_id=agent_id, heartbeat_interval_secs=5)
    move = {"idle": "ready", "working": "work"}[state]
    town.agents.update(agent.id, move, beat=Beat(5, age_ms=age_ms))
    return town.agents.get(agent.id)


@pytest.fixture
def agents(town):
    """alive (idle, beating), corpse (working, silent for 10 min), gone (stopped)."""
    alive = beating(town, "alive", "idle")
    corpse = beating(town, "corpse", "working", age_ms=LONG_AGO_MS)
    task = town.tasks.add("what the corpse was doing")
    town.agents.update(corpse.id, set_fields={"current_task": task.id})
    gone = beating(town, "gone", "idle")
    town.agents.set_state(gone.id, "kill")
    return {"alive": alive, "corpse": corpse, "gone": gone, "task": task}


def rows(out: str) -> dict[str, str]:
    return {line.split()[0]: line for line in out.splitlines()[1:] if line.strip()}


def test_list_shows_state_liveness_task_and_heartbeat_age_without_stopped_agents(run_tt, agents):
    result = run_tt("agent", "list")
    assert result.returncode == 0, result.stderr
    header, *_ = result.stdout.splitlines()
    assert header.split() == ["NAME", "ID", "STATE", "LIVENESS", "TASK", "LAST", "HEARTBEAT"]
    by_name = rows(result.stdout)
    assert "gone" not in by_name
    alive, corpse = by_name["alive"].split(), by_name["corpse"].split()
    assert alive[1:4] == [agents["alive"].id[:8], "idle", "alive"]
    assert corpse[1:5] == [agents["corpse"].id[:8], "working", "dead", agents["task"].id[:8]]
    assert "min ago" in by_name["corpse"] and " s ago" in by_name["alive"]
    assert "(1 stopped agent(s) not shown; --all shows them)" in result.stdout


def test_list_all_includes_stopped_agents_and_json_spells_states_as_rest(run_tt, agents):
    assert "stopped" in rows(run_tt("agent", "list", "--all").stdout)["gone"]
    data = json.loads(run_tt("agent", "list", "--all", "--json").stdout)
    by_name = {a["name"]: a for a in data["agents"]}
    assert data["count"] == 3
    assert (by_name["corpse"]["state"], by_name["corpse"]["alive"]) == ("Working", False)
    assert (by_name["alive"]["state"], by_name["alive"]["alive"]) == ("Idle", True)


def test_show_prints_every_field_and_its_liveness(run_tt, agents):
    corpse = agents["corpse"]
    result = run_tt("agent", "show", "corpse")
    assert result.returncode == 0, result.stderr
    fields = {
        k.strip(): v.strip() for k, v in (line.split(":", 1) for line in result.stdout.splitlines())
    }
    assert fields["id"] == corpse.id and fields["state"] == "working"
    assert fields["liveness"] == "dead" and fields["cli"] == "claude"
    assert fields["current_task"] == f"{agents['task'].id} (what the corpse was doing)"
    assert "min ago" in fields["last_heartbeat"] and fields["heartbeat_interval_secs"] == "5"


def test_kill_stops_the_agent_as_rest_kill_does(run_tt, town, agents):
    result = run_tt("agent", "kill", "alive")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Stopped agent alive (")
    assert town.agents.get(agents["alive"].id).state == AGENT["kill"].target
    assert town.agents.stop_requested(agents["alive"].id)


def test_killing_a_stopped_agent_says_it_was_already_stopped(run_tt, town, agents):
    assert run_tt("agent", "kill", "alive").returncode == 0
    again = run_tt("agent", "kill", "alive")
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == f"Agent alive ({agents['alive'].id[:8]}) was already stopped"
    assert town.agents.get(agents["alive"].id).state == AGENT["kill"].target


def test_restart_sets_the_record_back_to_idle_and_clears_the_stop_request(run_tt, town, agents):
    run_tt("agent", "kill", "alive")
    result = run_tt("agent", "restart", "alive")
    assert result.returncode == 0, result.stderr
    assert town.agents.get(agents["alive"].id).state == AGENT["restart"].target
    assert not town.agents.stop_requested(agents["alive"].id)


def test_an_unknown_agent_exits_5(run_tt, agents):
    for action in ("show", "kill", "restart"):
        result = run_tt("agent", action, "nobody")
        assert result.returncode == 5 and "not found" in result.stderr, result.stderr


def test_prune_deletes_stopped_agents_and_says_how_many(run_tt, town, agents):
    result = run_tt("agent", "prune")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Pruned 1 agent(s): gone"
    assert town.agents.find(agents["gone"].id) is None
    assert town.agents.find(agents["corpse"].id) is not None  # dead, but not stopped: kept


def test_prune_all_recovers_dead_agents_then_deletes_them(run_tt, town, agents):
    result = run_tt("agent", "prune", "--all")
    assert result.returncode == 0, result.stderr
    assert "Recovered 1 dead agent(s)" in result.stdout
    assert "Pruned 2 agent(s)" in result.stdout
    assert town.agents.find(agents["corpse"].id) is None
    assert town.agents.find(agents["alive"].id) is not None


def test_status_shows_a_dead_agent_as_dead(run_tt, agents):
    out = run_tt("status").stdout
    line = next(row for row in out.splitlines() if "corpse" in row)
    assert "dead (was working, no heartbeat for" in line
    alive = next(row for row in out.splitlines() if " alive " in f" {row} ")
    assert " idle " in alive and "dead" not in alive


def test_status_json_spells_agent_states_as_rest(run_tt, agents):
    data = json.loads(run_tt("status", "--json").stdout)
    by_name = {a["name"]: a for a in data["agents"]}
    assert by_name["corpse"]["state"] == "Working" and by_name["corpse"]["alive"] is False
