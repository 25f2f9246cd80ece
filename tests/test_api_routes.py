"""Townhall routes: each one's happy path and its error paths, against real Redis.

Every response is also checked against docs/openapi/townhall-v1.yaml by the SpecClient.
"""

from __future__ import annotations

import json
import uuid

from tinytown.core.liveness import Beat

from .api_support import app, client  # noqa: F401 - fixtures
from .conftest import next_message


def new_agent(client, name="alice", **extra):
    resp = client.post("/v1/agents", json={"name": name, **extra})
    assert resp.status_code == 201
    return resp.get_json()["agent_id"]


# --- town -------------------------------------------------------------------------------------


def test_town_shows_name_root_and_redis_url(client, town):
    body = client.get("/v1/town").get_json()
    assert body["name"] == town.config.name and body["root"] == str(town.config.root)
    assert body["redis_url"].startswith("unix://")


def test_status_lists_agents_with_inbox_lengths_and_current_scope(client, town):
    agent_id = new_agent(client)
    task = town.tasks.add("refactor the parser", agent_id=agent_id)
    town.agents.update(agent_id, "work", set_fields={"current_task": task.id})
    town.inbox.send(agent_id, "hello")
    town.inbox.send(agent_id, "now!", urgent=True)
    body = client.get("/v1/status?deep=true").get_json()
    assert body["agent_count"] == 1
    row = body["agents"][0]
    assert (row["state"], row["inbox_len"], row["urgent_len"]) == ("Working", 1, 1)
    assert row["current_scope"] == "refactor the parser"


def test_agents_list_carries_heartbeat_and_current_task(client, town):
    agent_id = new_agent(client)
    task = town.tasks.add("x", agent_id=agent_id)
    town.agents.update(agent_id, "work", set_fields={"current_task": task.id})
    body = client.get("/v1/agents").get_json()
    assert body["count"] == 1
    agent = body["agents"][0]
    assert agent["current_task"] == task.id and agent["last_heartbeat"]
    assert agent["state"] == "Working" and agent["current_scope"] == "x"


# --- agents (manage) --------------------------------------------------------------------------


def test_spawn_registers_a_starting_agent_with_the_default_cli(client, town):
    resp = client.post("/v1/agents", json={"name": "bob", "role_id": "backend"})
    body = resp.get_json()
    assert (
        resp.status_code == 201
        and body["cli"] == town.config.default_cli
        and body["nickname"] is None
    )
    assert town.agents.get(body["agent_id"]).state == "starting"


def test_spawn_rejects_reserved_names_and_bad_parent_ids_without_writing(client, town):
    resp = client.post("/v1/agents", json={"name": "Supervisor"})
    assert resp.status_code == 400 and resp.get_json()["field"] == "name"
    resp = client.post("/v1/agents", json={"name": "x", "parent_agent_id": "nope"})
    assert resp.status_code == 400 and "Invalid parent_agent_id" in resp.get_json()["detail"]
    assert town.agents.all() == []


def test_kill_sets_the_stop_flag_and_stops_the_agent_and_nudges_its_worker(client, town):
    agent_id = new_agent(client)
    listener = town.redis.pubsub(ignore_subscribe_messages=True)
    listener.subscribe(town.keys.control(agent_id))
    try:
        resp = client.post("/v1/agents/alice/kill")
        assert resp.get_json() == {"status": "stopped", "agent": "alice"}
        assert town.agents.get(agent_id).state == "stopped"
        assert town.redis.get(town.keys.stop(agent_id)) == "1"
        assert next_message(listener) == "stop"
    finally:
        listener.close()


def test_restart_makes_the_agent_idle_and_clears_the_stop_flag(client, town):
    agent_id = new_agent(client)
    client.post(f"/v1/agents/{agent_id}/kill")
    assert client.post(f"/v1/agents/{agent_id}/restart").get_json()["status"] == "restarted"
    assert town.agents.get(agent_id).state == "idle"
    assert not town.redis.exists(town.keys.stop(agent_id))


def test_unknown_agent_is_404_not_500(client):
    for path in ("/v1/agents/ghost/kill", "/v1/agents/ghost/restart", "/v1/agents/ghost/inbox"):
        resp = client.post(path)
        assert resp.status_code == 404, path
        assert "ghost" in resp.get_json()["detail"]


def test_prune_removes_stopped_agents_only_unless_all(client, town):
    new_agent(client, "alive")
    dead = new_agent(client, "dead")
    client.post(f"/v1/agents/{dead}/kill")
    assert client.post("/v1/agents/prune", json={}).get_json() == {
        "removed": 1,
        "agents": ["dead"],
        "kept": [],
    }
    assert client.post("/v1/agents/prune", json={"all": True}).get_json()["agents"] == ["alive"]
    assert town.agents.all() == []


# --- tasks ------------------------------------------------------------------------------------


def test_assign_creates_a_task_on_the_agents_docket_with_worker_fields(client, town):
    agent_id = new_agent(client)
    resp = client.post(
        "/v1/tasks/assign",
        json={
            "agent": "alice",
            "task": "fix it",
            "repo": "/srv/r.git",
            "base_branch": "dev",
            "push": True,
            "cli": "codex",
            "tags": ["bug"],
        },
    )
    body = resp.get_json()
    assert (
        resp.status_code == 201 and body["agent_id"] == agent_id and body["agent_name"] == "alice"
    )
    task = town.tasks.get(body["task_id"])
    assert (task.state, task.repo, task.base_branch, task.push, task.cli, task.tags) == (
        "assigned",
        "/srv/r.git",
        "dev",
        True,
        "codex",
        ["bug"],
    )
    entries = town.redis.xrange(town.keys.agent_docket(agent_id))
    assert [e[1]["task_id"] for e in entries] == [task.id]


def test_assign_to_an_unknown_agent_is_404_and_writes_nothing(client, town):
    resp = client.post("/v1/tasks/assign", json={"agent": "ghost", "task": "x"})
    assert resp.status_code == 404
    assert town.tasks.counts() == dict.fromkeys(town.tasks.counts(), 0)


def test_tasks_list_filters_by_state_and_paginates(client, town):
    ids = [town.tasks.add(f"t{i}").id for i in range(5)]
    town.tasks.cancel(ids[0], "no")
    body = client.get("/v1/tasks?state=pending&limit=2&offset=1").get_json()
    assert [t["id"] for t in body["tasks"]] == ids[2:4]
    assert (body["count"], body["total"], body["offset"], body["limit"]) == (2, 4, 1, 2)
    assert client.get("/v1/tasks?state=Cancelled").get_json()["total"] == 1
    assert client.get("/v1/tasks").get_json()["total"] == 5


def test_tasks_list_rejects_unknown_state_and_bad_limits(client):
    assert client.get("/v1/tasks?state=done").get_json()["field"] == "state"
    assert client.get("/v1/tasks?limit=0").status_code == 422
    assert client.get("/v1/tasks?offset=x").get_json()["field"] == "offset"


def test_get_task_shows_it_and_404s_an_unknown_one(client, town):
    task = town.tasks.add("x", tags=["t"])
    body = client.get(f"/v1/tasks/{task.id}").get_json()
    assert body["id"] == task.id and body["state"] == "Pending" and body["tags"] == ["t"]
    assert client.get(f"/v1/tasks/{uuid.uuid4()}").status_code == 404
    assert client.get("/v1/tasks/not-a-uuid").status_code == 400


def test_complete_and_fail_report_a_task_outcome(client, town):
    a, b = town.tasks.add("a"), town.tasks.add("b")
    body = client.post(f"/v1/tasks/{a.id}/complete", json={"result": "done, PR #3"}).get_json()
    assert body["state"] == "Completed" and body["result"] == "done, PR #3"
    body = client.post(f"/v1/tasks/{b.id}/fail", json={"reason": "tests red"}).get_json()
    assert body["state"] == "Failed" and body["result"] == "tests red"
    assert town.tasks.counts()["completed"] == 1 and town.tasks.counts()["failed"] == 1


def test_cancel_stops_a_live_task_for_good(client, town):
    task = town.tasks.add("no longer wanted")
    body = client.post(f"/v1/tasks/{task.id}/cancel", json={"reason": "duplicate of #7"}).get_json()
    assert body["state"] == "Cancelled" and body["result"] == "duplicate of #7"
    assert town.tasks.counts()["cancelled"] == 1 and town.tasks.counts()["pending"] == 0
    again = client.post(f"/v1/tasks/{task.id}/cancel")
    assert again.status_code == 409 and town.tasks.get(task.id).result == "duplicate of #7"
    assert client.post(f"/v1/tasks/{uuid.uuid4()}/cancel").status_code == 404
    assert (
        client.post(f"/v1/tasks/{town.tasks.add('x').id}/cancel", json={"reason": 7}).status_code
        == 422
    )


def test_complete_without_a_body_is_accepted(client, town):
    task = town.tasks.add("a")
    assert client.post(f"/v1/tasks/{task.id}/complete").status_code == 200


def test_completing_a_finished_task_is_409_and_an_unknown_one_404(client, town):
    task = town.tasks.add("a")
    client.post(f"/v1/tasks/{task.id}/complete", json={})
    resp = client.post(f"/v1/tasks/{task.id}/fail", json={})
    assert resp.status_code == 409 and "completed" in resp.get_json()["detail"]
    assert town.tasks.get(task.id).state == "completed"
    assert client.post(f"/v1/tasks/{uuid.uuid4()}/complete", json={}).status_code == 404


def test_complete_guarded_by_another_agent_is_409(client, town):
    alice, _ = new_agent(client, "alice"), new_agent(client, "bob")
    task = town.tasks.add("x", agent_id=alice)
    assert client.post(f"/v1/tasks/{task.id}/complete", json={"agent": "bob"}).status_code == 409
    assert client.post(f"/v1/tasks/{task.id}/complete", json={"agent": "alice"}).status_code == 200


def test_pending_lists_assigned_tasks_not_yet_started(client, town):
    agent_id = new_agent(client)
    task = town.tasks.add("queued for alice", agent_id=agent_id)
    town.tasks.add("backlog task")
    body = client.get("/v1/tasks/pending").get_json()
    assert body == {
        "count": 1,
        "tasks": [
            {
                "task_id": task.id,
                "description": "queued for alice",
                "agent_id": agent_id,
                "agent_name": "alice",
            }
        ],
    }


# --- backlog ----------------------------------------------------------------------------------


def test_backlog_add_list_claim_and_remove(client, town):
    agent_id = new_agent(client)
    t1 = client.post(
        "/v1/backlog", json={"description": "one", "tags": ["x"], "repo": "r"}
    ).get_json()["task_id"]
    t2 = client.post("/v1/backlog", json={"description": "two"}).get_json()["task_id"]
    body = client.get("/v1/backlog").get_json()
    assert body == {
        "count": 2,
        "backlog": [
            {"task_id": t1, "description": "one", "tags": ["x"]},
            {"task_id": t2, "description": "two", "tags": []},
        ],
    }
    claimed = client.post(f"/v1/backlog/{t1}/claim", json={"agent": "alice"}).get_json()
    assert claimed == {"task_id": t1, "agent_id": agent_id, "agent_name": "alice"}
    assert town.tasks.get(t1).state == "assigned"
    assert client.delete(f"/v1/backlog/{t2}").get_json() == {"removed": True, "task_id": t2}
    assert town.tasks.find(t2) is None and client.get("/v1/backlog").get_json()["count"] == 0


def test_backlog_claim_and_remove_errors(client, town):
    new_agent(client)
    assert client.post("/v1/backlog/xyz/claim", json={"agent": "alice"}).status_code == 400
    missing = uuid.uuid4()
    assert client.post(f"/v1/backlog/{missing}/claim", json={"agent": "alice"}).status_code == 404
    resp = client.delete(f"/v1/backlog/{missing}")
    assert (
        resp.status_code == 404
        and resp.get_json()["detail"] == f"Task {missing} not found in backlog"
    )
    task = town.tasks.add("t")
    client.post(f"/v1/backlog/{task.id}/claim", json={"agent": "alice"})
    assert client.post(f"/v1/backlog/{task.id}/claim", json={"agent": "alice"}).status_code == 409
    assert client.delete(f"/v1/backlog/{task.id}").status_code == 404


def test_assign_all_moves_every_backlog_task_to_the_agent(client, town):
    agent_id = new_agent(client)
    ids = [town.tasks.add(f"t{i}").id for i in range(3)]
    body = client.post("/v1/backlog/assign-all", json={"agent": agent_id}).get_json()
    assert body == {"assigned": 3, "tasks": ids, "remaining": 0}
    assert town.redis.llen(town.keys.backlog) == 0
    assert {t.assigned_to for t in town.tasks.many(ids)} == {agent_id}


def test_assign_all_assigns_a_bounded_batch_and_says_how_many_are_left(client, town):
    """One call assigned the whole backlog: 15 s at 22,000 tasks, past gunicorn's timeout (the
    request killed half way) at about 45,000."""
    agent_id = new_agent(client)
    ids = [town.tasks.add(f"t{i}").id for i in range(1005)]
    body = client.post("/v1/backlog/assign-all", json={"agent": agent_id}).get_json()
    assert (body["assigned"], body["remaining"]) == (1000, 5) and body["tasks"] == ids[:1000]
    assert town.tasks.backlog()[0] == ids[1000:]
    rest = client.post("/v1/backlog/assign-all", json={"agent": agent_id}).get_json()
    assert (rest["assigned"], rest["remaining"]) == (5, 0)


# --- messages ---------------------------------------------------------------------------------


def test_send_puts_a_message_on_the_inbox_and_the_inbox_route_shows_it(client, town):
    agent_id = new_agent(client)
    resp = client.post(
        "/v1/messages/send", json={"to": "alice", "message": "what is the plan?", "kind": "query"}
    )
    body = resp.get_json()
    assert resp.status_code == 201 and body["to_agent"] == agent_id and body["urgent"] is False
    client.post(
        "/v1/messages/send",
        json={"to": "alice", "message": "stop", "urgent": True, "from": "supervisor"},
    )
    inbox = client.get("/v1/agents/alice/inbox").get_json()
    assert (inbox["agent"], inbox["total"], inbox["urgent"]) == ("alice", 1, 1)
    assert (
        inbox["messages"][0]["type"] == "query"
        and inbox["messages"][0]["summary"] == "what is the plan?"
    )
    stored = json.loads(town.redis.lindex(town.keys.inbox(agent_id), 0))
    assert stored["id"] == body["message_id"]


def test_send_to_the_supervisor_and_unknown_kinds_become_tasks(client):
    client.post("/v1/messages/send", json={"to": "conductor", "message": "help", "kind": "weird"})
    inbox = client.post("/v1/agents/supervisor/inbox").get_json()
    assert inbox["messages"][0]["type"] == "task" and inbox["total"] == 1


def test_send_to_an_unknown_agent_is_404(client):
    assert client.post("/v1/messages/send", json={"to": "ghost", "message": "x"}).status_code == 404


# --- missions ---------------------------------------------------------------------------------

OBJECTIVES = [
    {"type": "issue", "owner": "acme", "repo": "app", "number": 7},
    {"type": "doc", "path": "docs/plan.md"},
]


def new_mission(client, **policy):
    resp = client.post("/v1/missions", json={"objectives": OBJECTIVES, "policy": policy})
    assert resp.status_code == 201
    return resp.get_json()


def test_mission_create_show_and_list(client, town, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")  # no gh: each issue is titled "Issue #N"
    created = new_mission(client, max_parallel_items=3)
    assert created["state"] == "running" and created["objective_count"] == 2
    assert created["work_items"] == 2 and "gh" in created["warnings"][0]
    mid = created["mission_id"]
    assert town.redis.sismember(town.keys.missions_active, mid)
    shown = client.get(f"/v1/missions/{mid}?include_events=true").get_json()
    assert shown["mission"]["policy"]["max_parallel_items"] == 3
    assert shown["mission"]["objective_refs"] == OBJECTIVES
    items = {i["key"]: i for i in shown["work_items"]}
    assert items["acme/app#7"]["title"] == "Issue #7" and items["doc-1"]["kind"] == "design"
    assert shown["summary"]["total_work_items"] == 2 and shown["summary"]["pending"] == 2
    (event,) = shown["events"]
    assert event["event_type"] == "mission_state_changed" and event["new_state"] == "running"
    listed = client.get("/v1/missions").get_json()
    assert [m["id"] for m in listed["missions"]] == [mid]
    assert client.get("/v1/missions?active_only=true").get_json()["total"] == 1


def test_mission_create_validates_objectives_and_policy(client, town):
    resp = client.post("/v1/missions", json={"objectives": []})
    assert resp.status_code == 422 and resp.get_json()["field"] == "items"
    resp = client.post("/v1/missions", json={"objectives": "nope"})
    assert resp.status_code == 422 and resp.get_json()["field"] == "objectives"
    resp = client.post(
        "/v1/missions", json={"objectives": [{"type": "issue", "owner": "a", "repo": "b"}]}
    )
    assert resp.get_json()["field"] == "objectives[0].number"
    resp = client.post(
        "/v1/missions", json={"objectives": OBJECTIVES, "policy": {"auto_merge": "yes"}}
    )
    assert resp.get_json()["field"] == "policy.auto_merge"
    assert town.redis.zcard(town.keys.missions) == 0


def test_mission_lifecycle_stop_resume_complete(client, town):
    mid = new_mission(client)["mission_id"]
    assert client.post(f"/v1/missions/{mid}/stop", json={}).get_json() == {
        "id": mid,
        "state": "blocked",
    }
    assert not town.redis.sismember(town.keys.missions_active, mid)
    assert client.post(f"/v1/missions/{mid}/resume").get_json() == {"id": mid, "state": "running"}
    assert client.post(f"/v1/missions/{mid}/resume").get_json()["note"] == "already running"
    assert town.redis.sismember(town.keys.missions_active, mid)
    assert client.post(f"/v1/missions/{mid}/complete").get_json() == {
        "id": mid,
        "state": "completed",
    }
    assert client.post(f"/v1/missions/{mid}/complete").get_json()["note"] == "already completed"
    resp = client.post(f"/v1/missions/{mid}/resume")
    assert (
        resp.status_code == 400
        and resp.get_json()["detail"] == "mission is completed and cannot be resumed"
    )


def test_mission_fail_force_stop_and_delete(client, town):
    mid = new_mission(client)["mission_id"]
    body = client.post(f"/v1/missions/{mid}/fail", json={}).get_json()
    assert body == {"id": mid, "state": "failed", "reason": "Marked failed via API"}
    other = new_mission(client)["mission_id"]
    assert (
        client.post(f"/v1/missions/{other}/stop", json={"force": True}).get_json()["state"]
        == "failed"
    )
    assert client.delete(f"/v1/missions/{mid}").get_json() == {"id": mid, "deleted": True}
    assert not town.redis.exists(town.keys.mission(mid), town.keys.mission_log(mid))
    assert client.get(f"/v1/missions/{mid}").status_code == 404


def test_deleting_an_active_mission_needs_force(client, town):
    mid = new_mission(client)["mission_id"]
    assert client.delete(f"/v1/missions/{mid}").status_code == 409
    assert client.delete(f"/v1/missions/{mid}?force=true").status_code == 200
    assert (
        town.redis.zcard(town.keys.missions) == 0
        and town.redis.scard(town.keys.missions_active) == 0
    )


def test_mission_routes_400_on_bad_ids_and_404_on_unknown(client):
    assert (
        client.get("/v1/missions/nope").get_json()["detail"]
        == "invalid mission id 'nope': expected a UUID"
    )
    missing = uuid.uuid4()
    for method, path in (
        ("GET", ""),
        ("POST", "/stop"),
        ("POST", "/resume"),
        ("POST", "/complete"),
        ("POST", "/fail"),
        ("DELETE", ""),
        ("GET", "/work"),
        ("GET", "/watches"),
        ("GET", "/events"),
    ):
        resp = client.open(method, f"/v1/missions/{missing}{path}")
        assert resp.status_code == 404, (method, path)


def test_mission_work_items_and_watches_are_records(client, town):
    mid = new_mission(client)["mission_id"]
    item = {
        "id": "w1",
        "mission_id": mid,
        "title": "Design",
        "kind": "design",
        "depends_on": [],
        "owner_role": None,
        "status": "ready",
        "assigned_to": None,
        "artifact_refs": [],
        "reviewer_approved": False,
        "source_ref": None,
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
    }
    watch = {
        "id": "x1",
        "mission_id": mid,
        "work_item_id": "w1",
        "kind": "pr_checks",
        "target_ref": "acme/app#3",
        "interval_secs": 180,
        "next_due_at": None,
        "status": "active",
        "on_trigger": "create_fix_task",
        "last_check_at": None,
        "consecutive_failures": 0,
    }
    town.redis.hset(town.keys.mission_work(mid), "w1", json.dumps(item))
    town.redis.hset(town.keys.mission_watch(mid), "x1", json.dumps(watch))
    assert client.get(f"/v1/missions/{mid}/work?status=ready").get_json()["count"] == 1
    assert client.get(f"/v1/missions/{mid}/work?status=done").get_json()["count"] == 0
    assert client.get(f"/v1/missions/{mid}/work/w1").get_json()["title"] == "Design"
    updated = client.patch(
        f"/v1/missions/{mid}/work/w1", json={"status": "done", "artifacts": ["pr:3"]}
    ).get_json()
    assert updated["status"] == "done" and updated["artifact_refs"] == ["pr:3"]
    assert client.get(f"/v1/missions/{mid}").get_json()["summary"]["done"] == 1
    snoozed = client.post(
        f"/v1/missions/{mid}/watches/x1/snooze", json={"duration_secs": 600}
    ).get_json()
    assert snoozed["status"] == "snoozed" and snoozed["next_due_at"]
    assert client.get(f"/v1/missions/{mid}/watches").get_json()["watches"][0]["status"] == "snoozed"
    assert (
        client.post(f"/v1/missions/{mid}/watches/x1/snooze", json={"duration_secs": 5}).status_code
        == 422
    )
    assert client.get(f"/v1/missions/{mid}/work/nope").status_code == 404
    assert client.get(f"/v1/missions/{mid}/events?limit=1").get_json()["count"] == 1


# --- recovery (tinytown.recovery does the work; these check the wiring) -----------------------


def test_recover_stops_agents_with_a_stale_heartbeat(client, town):
    agent_id = new_agent(client)
    town.agents.update(agent_id, "work", beat=Beat(5, age_ms=600_000))
    body = client.post("/v1/recover").get_json()
    assert body["recovered"] == 1 and body["agents"] == ["alice"]
    assert town.agents.get(agent_id).state == "stopped"


def test_reclaim_without_a_destination_lists_and_discards_nothing(client, town):
    agent_id = new_agent(client)
    client.post(f"/v1/agents/{agent_id}/kill")
    town.inbox.send(agent_id, "finish the docs")
    body = client.post("/v1/reclaim", json={}).get_json()
    assert body["destination"] == "Listed" and body["reclaimed"] == 1
    assert town.redis.llen(town.keys.inbox(agent_id)) == 1


def test_reclaim_to_the_backlog_turns_task_messages_into_tasks(client, town):
    agent_id = new_agent(client)
    client.post(f"/v1/agents/{agent_id}/kill")
    town.inbox.send(agent_id, "finish the docs")
    body = client.post("/v1/reclaim", json={"to_backlog": True}).get_json()
    assert body["destination"] == "Backlog" and body["reclaimed"] == 1
    ids, total = town.tasks.backlog()
    assert total == 1 and town.tasks.get(ids[0]).description == "finish the docs"


def test_reclaim_rejects_two_destinations_and_unknown_agents(client, town):
    new_agent(client)
    assert client.post("/v1/reclaim", json={"to_backlog": True, "to": "alice"}).status_code == 422
    assert client.post("/v1/reclaim", json={"from": "ghost"}).status_code == 404
    assert client.post("/v1/reclaim", json={"from": "alice"}).status_code == 409  # still running


def test_orphan_tasks_lists_tasks_of_gone_agents_and_refuses_unknown_actions(client, town):
    agent_id = new_agent(client)
    task = town.tasks.add("x", agent_id=agent_id)
    client.post(f"/v1/agents/{agent_id}/kill")
    body = client.post("/v1/reclaim/orphan-tasks").get_json()
    assert body["action"] == "list" and body["count"] == 1
    assert body["orphans"][0] == {
        "task_id": task.id,
        "assigned_to": agent_id,
        "state": "assigned",
        "reason": "agent_terminal",
    }
    resp = client.post("/v1/reclaim/orphan-tasks", json={"action": "explode"})
    assert resp.status_code == 400 and resp.get_json()["field"] == "action"
    assert (
        client.post("/v1/reclaim/orphan-tasks", json={"action": "cancel"}).get_json()["count"] == 1
    )
    assert town.tasks.get(task.id).state == "cancelled"
