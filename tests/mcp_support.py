"""What the MCP tests share: the official client driven from plain tests, and one happy-path case
per tool, which both transports run (``test_mcp_http.py`` against townhall's ``/mcp``,
``test_mcp_stdio.py`` against ``tt mcp-stdio``).

A :class:`Driver` holds an open :class:`mcp.client.client.Client` on an anyio portal (one event
loop in a thread), so a module opens one connection and its tests stay synchronous. Each case
makes the state it needs through the tools themselves (agents by ``agent.spawn``, tasks by
``backlog.add``, missions by ``mission.start``); only a mission watch, which nothing in the town
creates, is written to Redis directly.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import mcp_types as types
from anyio.from_thread import BlockingPortal, start_blocking_portal
from mcp.client.client import Client

from tinytown.store import Town


class Driver:
    """An open MCP client, called synchronously; ``town`` reads and seeds what tools cannot."""

    def __init__(self, portal: BlockingPortal, client: Client, town: Town):
        self.portal, self.client, self.town = portal, client, town
        self.log: Path | None = None  # where the server's stderr goes, when the test knows

    def call(self, name: str, args: dict | None = None) -> types.CallToolResult:
        return self.portal.call(self.client.call_tool, name, args or {})

    def ok(self, name: str, args: dict | None = None) -> dict:
        """The tool's structured result; fails the test on a tool error."""
        result = self.call(name, args)
        assert not result.is_error, f"{name}: {result.content[0].text}"
        assert json.loads(result.content[0].text) == result.structured_content  # text mirrors it
        return result.structured_content

    def refused(self, name: str, args: dict | None = None) -> types.CallToolResult:
        result = self.call(name, args)
        assert result.is_error, f"{name} succeeded: {result.structured_content}"
        assert result.content[0].text == result.structured_content["detail"]
        return result

    def run(self, method: Callable, *args):
        """Any other client method (``list_tools``, ``read_resource``, ``get_prompt``, ...)."""
        return self.portal.call(method, *args)

    # -- state, made through the tools ---------------------------------------------------------

    def agent(self) -> str:
        name = f"a-{uuid.uuid4().hex[:8]}"
        assert self.ok("agent.spawn", {"name": name})["name"] == name
        return name

    def task(self, description: str = "write the changelog") -> str:
        return self.ok("backlog.add", {"description": description})["task_id"]

    def mission(self) -> str:
        return self.ok("mission.start", {"title": "Ship it", "items": ITEMS})["mission_id"]

    def watch(self, mission_id: str) -> str:
        """A watch on the mission's first item (upstream's shape; nothing here makes one)."""
        watch_id = f"x-{uuid.uuid4().hex[:6]}"
        item = self.ok("mission.list_work", {"mission_id": mission_id})["work_items"][0]
        doc = {
            "id": watch_id,
            "mission_id": mission_id,
            "work_item_id": item["id"],
            "kind": "pr_checks",
            "target_ref": "acme/app#3",
            "interval_secs": 180,
            "next_due_at": None,
            "status": "active",
            "on_trigger": "create_fix_task",
            "last_check_at": None,
            "consecutive_failures": 0,
        }
        self.town.redis.hset(self.town.keys.mission_watch(mission_id), watch_id, json.dumps(doc))
        return watch_id


ITEMS = [
    {"key": "design", "title": "Design", "description": "write plan.md"},
    {"key": "build", "title": "Build", "description": "do plan.md", "depends_on": ["design"]},
]


@contextmanager
def driving(connect: Callable[[], AbstractAsyncContextManager[Client]], town: Town):
    """A :class:`Driver` on the client ``connect()`` opens, for as long as the block runs."""
    with start_blocking_portal() as portal:
        with portal.wrap_async_context_manager(connect()) as client:
            yield Driver(portal, client, town)


# -- one happy path per tool -------------------------------------------------------------------

CASES: dict[str, Callable[[Driver], None]] = {}


def case(name: str):
    def register(fn: Callable[[Driver], None]) -> Callable[[Driver], None]:
        assert name not in CASES, name
        CASES[name] = fn
        return fn

    return register


@case("town.info")
def _(d: Driver) -> None:
    assert d.ok("town.info")["name"] == d.town.config.name


@case("town.get_status")
def _(d: Driver) -> None:
    name = d.agent()
    status = d.ok("town.get_status")
    assert status["name"] == d.town.config.name
    assert name in [a["name"] for a in status["agents"]]
    assert status["agent_count"] == len(status["agents"])


@case("agent.spawn")
def _(d: Driver) -> None:
    out = d.ok("agent.spawn", {"name": "builder-1", "role_id": "builder", "nickname": "bob"})
    assert (out["name"], out["role_id"], out["nickname"]) == ("builder-1", "builder", "bob")
    assert d.ok("agent.get", {"agent": "bob"})["id"] == out["agent_id"]


@case("agent.list")
def _(d: Driver) -> None:
    name = d.agent()
    out = d.ok("agent.list")
    assert name in [a["name"] for a in out["agents"]] and out["count"] == len(out["agents"])


@case("agent.list_open")
def _(d: Driver) -> None:
    alive, killed = d.agent(), d.agent()
    d.ok("agent.kill", {"agent": killed})
    names = [a["name"] for a in d.ok("agent.list_open")["agents"]]
    assert alive in names and killed not in names


@case("agent.get")
def _(d: Driver) -> None:
    name = d.agent()
    out = d.ok("agent.get", {"agent": name})
    assert (out["name"], out["tasks_completed"], out["current_task"]) == (name, 0, None)


@case("agent.inbox")
def _(d: Driver) -> None:
    name = d.agent()
    d.ok("message.send", {"to": name, "message": "read plan.md", "kind": "info"})
    out = d.ok("agent.inbox", {"agent": name})
    assert (out["agent"], out["total"], out["urgent"]) == (name, 1, 0)
    assert "read plan.md" in out["messages"][0]["summary"]


@case("agent.kill")
def _(d: Driver) -> None:
    name = d.agent()
    assert d.ok("agent.kill", {"agent": name}) == {"status": "stopped", "agent": name}
    assert d.ok("agent.get", {"agent": name})["state"] == "Stopped"


@case("agent.restart")
def _(d: Driver) -> None:
    name = d.agent()
    d.ok("agent.kill", {"agent": name})
    assert d.ok("agent.restart", {"agent": name}) == {"status": "restarted", "agent": name}
    assert d.ok("agent.get", {"agent": name})["state"] == "Idle"


@case("agent.pause")
def _(d: Driver) -> None:
    name = d.agent()
    assert d.ok("agent.pause", {"agent": name}) == {"status": "paused", "agent": name}
    assert d.ok("agent.get", {"agent": name})["state"] == "Paused"


@case("agent.resume")
def _(d: Driver) -> None:
    name = d.agent()
    d.ok("agent.pause", {"agent": name})
    assert d.ok("agent.resume", {"agent": name}) == {"status": "resumed", "agent": name}
    assert d.ok("agent.get", {"agent": name})["state"] == "Idle"


@case("agent.prune")
def _(d: Driver) -> None:
    kept, pruned = d.agent(), d.agent()
    d.ok("agent.kill", {"agent": pruned})
    out = d.ok("agent.prune")
    assert pruned in out["agents"] and kept not in out["agents"]
    assert out["removed"] == len(out["agents"])


@case("recovery.recover_agents")
def _(d: Driver) -> None:
    out = d.ok("recovery.recover_agents")
    assert set(out) == {"checked", "recovered", "agents", "reclaimed"}
    assert out["recovered"] == len(out["agents"])


@case("recovery.reclaim_tasks")
def _(d: Driver) -> None:
    name = d.agent()
    d.ok("message.send", {"to": name, "message": "fix the flaky test"})
    d.ok("agent.kill", {"agent": name})
    out = d.ok("recovery.reclaim_tasks", {"from_agent": name, "to_backlog": True})
    assert (out["destination"], out["reclaimed"]) == ("Backlog", 1)
    backlog = d.ok("backlog.list", {"limit": 500})["backlog"]
    assert "fix the flaky test" in [t["description"] for t in backlog]


@case("recovery.orphan_tasks")
def _(d: Driver) -> None:
    name = d.agent()
    task_id = d.ok("task.assign", {"agent": name, "description": "left behind"})["task_id"]
    d.ok("agent.kill", {"agent": name})
    out = d.ok("recovery.orphan_tasks", {"action": "list"})
    assert {"task_id": task_id, "reason": "agent_terminal"}.items() <= next(
        o for o in out["orphans"] if o["task_id"] == task_id
    ).items()


@case("task.list")
def _(d: Driver) -> None:
    task_id = d.task()
    out = d.ok("task.list", {"state": "pending", "limit": 500})
    assert task_id in [t["id"] for t in out["tasks"]]
    assert all(t["state"] == "Pending" for t in out["tasks"])


@case("task.get")
def _(d: Driver) -> None:
    task_id = d.task("describe the API")
    out = d.ok("task.get", {"task_id": task_id})
    assert (out["id"], out["description"], out["state"]) == (task_id, "describe the API", "Pending")


@case("task.list_pending")
def _(d: Driver) -> None:
    name = d.agent()
    task_id = d.ok("task.assign", {"agent": name, "description": "aimed"})["task_id"]
    rows = d.ok("task.list_pending", {"limit": 500})["tasks"]
    assert {"task_id": task_id, "description": "aimed", "agent_name": name}.items() <= next(
        r for r in rows if r["task_id"] == task_id
    ).items()


@case("backlog.list")
def _(d: Driver) -> None:
    task_id = d.task()
    rows = d.ok("backlog.list", {"limit": 500})["backlog"]
    assert task_id in [r["task_id"] for r in rows]


@case("backlog.add")
def _(d: Driver) -> None:
    out = d.ok("backlog.add", {"description": "tag me", "tags": ["docs"], "push": True})
    task = d.ok("task.get", {"task_id": out["task_id"]})
    assert (task["tags"], task["push"], task["state"]) == (["docs"], True, "Pending")


@case("task.assign")
def _(d: Driver) -> None:
    name = d.agent()
    out = d.ok("task.assign", {"agent": name, "description": "review #12"})
    task = d.ok("task.get", {"task_id": out["task_id"]})
    assert (task["state"], task["assigned_to"]) == ("Assigned", out["agent_id"])


@case("backlog.claim")
def _(d: Driver) -> None:
    name, task_id = d.agent(), d.task()
    out = d.ok("backlog.claim", {"task_id": task_id, "agent": name})
    assert d.ok("task.get", {"task_id": task_id})["assigned_to"] == out["agent_id"]


@case("backlog.assign_all")
def _(d: Driver) -> None:
    name, first, second = d.agent(), d.task(), d.task()
    out = d.ok("backlog.assign_all", {"agent": name})
    assert {first, second} <= set(out["tasks"]) and out["assigned"] == len(out["tasks"])
    assert d.ok("task.get", {"task_id": second})["state"] == "Assigned"


@case("backlog.remove")
def _(d: Driver) -> None:
    task_id = d.task()
    assert d.ok("backlog.remove", {"task_id": task_id}) == {"removed": True, "task_id": task_id}
    assert task_id not in [r["task_id"] for r in d.ok("backlog.list", {"limit": 500})["backlog"]]


@case("task.complete")
def _(d: Driver) -> None:
    task_id = d.task()
    out = d.ok("task.complete", {"task_id": task_id, "result": "done: see #12"})
    assert (out["state"], out["result"]) == ("Completed", "done: see #12")


@case("task.fail")
def _(d: Driver) -> None:
    task_id = d.task()
    out = d.ok("task.fail", {"task_id": task_id, "reason": "no repo access"})
    assert (out["state"], out["result"]) == ("Failed", "no repo access")


@case("task.cancel")
def _(d: Driver) -> None:
    task_id = d.task()
    assert d.ok("task.cancel", {"task_id": task_id, "reason": "dup"})["state"] == "Cancelled"


@case("message.send")
def _(d: Driver) -> None:
    name = d.agent()
    out = d.ok("message.send", {"to": name, "message": "stand up", "urgent": True})
    assert out["urgent"] is True and out["to_agent"] == d.ok("agent.get", {"agent": name})["id"]
    assert d.ok("agent.inbox", {"agent": name})["urgent"] == 1


@case("mission.start")
def _(d: Driver) -> None:
    out = d.ok("mission.start", {"title": "Ship it", "items": ITEMS, "max_parallel": 2})
    assert (out["state"], out["work_items"], out["objective_count"]) == ("running", 2, 0)
    mission = d.ok("mission.get_status", {"mission_id": out["mission_id"]})["mission"]
    assert mission["title"] == "Ship it" and mission["policy"]["max_parallel_items"] == 2


@case("mission.list")
def _(d: Driver) -> None:
    mission_id = d.mission()
    out = d.ok("mission.list", {"active_only": True, "limit": 200})
    assert mission_id in [m["id"] for m in out["missions"]]


@case("mission.get_status")
def _(d: Driver) -> None:
    mission_id = d.mission()
    out = d.ok("mission.get_status", {"mission_id": mission_id, "include_events": True})
    assert out["mission"]["id"] == mission_id and len(out["work_items"]) == 2
    assert out["summary"]["total_work_items"] == 2 and out["events"]


@case("mission.list_work")
def _(d: Driver) -> None:
    mission_id = d.mission()
    out = d.ok("mission.list_work", {"mission_id": mission_id})
    assert [i["key"] for i in out["work_items"]] == ["design", "build"] and out["count"] == 2


@case("mission.get_work_item")
def _(d: Driver) -> None:
    mission_id = d.mission()
    item = d.ok("mission.list_work", {"mission_id": mission_id})["work_items"][1]
    out = d.ok("mission.get_work_item", {"mission_id": mission_id, "work_item_id": item["id"]})
    assert out == item and out["title"] == "Build"


@case("mission.list_watches")
def _(d: Driver) -> None:
    mission_id = d.mission()
    watch_id = d.watch(mission_id)
    out = d.ok("mission.list_watches", {"mission_id": mission_id})
    assert [w["id"] for w in out["watches"]] == [watch_id] and out["count"] == 1


@case("mission.get_events")
def _(d: Driver) -> None:
    mission_id = d.mission()
    out = d.ok("mission.get_events", {"mission_id": mission_id, "limit": 10})
    assert out["count"] == len(out["events"]) >= 1
    assert all(e["mission_id"] == mission_id for e in out["events"])


@case("mission.update_work_item")
def _(d: Driver) -> None:
    mission_id = d.mission()
    item = d.ok("mission.list_work", {"mission_id": mission_id})["work_items"][0]
    args = {"mission_id": mission_id, "work_item_id": item["id"]}
    out = d.ok("mission.update_work_item", {**args, "status": "done", "artifacts": ["pr:3"]})
    assert (out["status"], out["artifact_refs"]) == ("done", ["pr:3"])


@case("mission.snooze_watch")
def _(d: Driver) -> None:
    mission_id = d.mission()
    watch_id = d.watch(mission_id)
    args = {"mission_id": mission_id, "watch_id": watch_id, "duration_secs": 600}
    out = d.ok("mission.snooze_watch", args)
    assert out["status"] == "snoozed" and out["next_due_at"]


@case("mission.stop")
def _(d: Driver) -> None:
    mission_id = d.mission()
    out = d.ok("mission.stop", {"mission_id": mission_id})
    assert out == {"id": mission_id, "state": "blocked"}  # upstream's word for stopped


@case("mission.resume")
def _(d: Driver) -> None:
    mission_id = d.mission()
    d.ok("mission.stop", {"mission_id": mission_id})
    out = d.ok("mission.resume", {"mission_id": mission_id})
    assert out == {"id": mission_id, "state": "running"}


@case("mission.complete")
def _(d: Driver) -> None:
    mission_id = d.mission()
    out = d.ok("mission.complete", {"mission_id": mission_id})
    assert out == {"id": mission_id, "state": "completed"}


@case("mission.fail")
def _(d: Driver) -> None:
    mission_id = d.mission()
    out = d.ok("mission.fail", {"mission_id": mission_id, "reason": "abandoned"})
    assert out == {"id": mission_id, "state": "failed", "reason": "abandoned"}


@case("mission.delete")
def _(d: Driver) -> None:
    mission_id = d.mission()
    out = d.ok("mission.delete", {"mission_id": mission_id, "force": True})
    assert out == {"id": mission_id, "deleted": True}
    assert d.refused("mission.get_status", {"mission_id": mission_id}).structured_content[
        "status"
    ] == (404)


@case("mission.note")
def _(d: Driver) -> None:
    mission_id = d.mission()
    out = d.ok("mission.note", {"mission_id": mission_id, "message": "tests first, please"})
    assert out["body"] == "tests first, please" and out["sender"] == "conductor"


@case("mission.pause")
def _(d: Driver) -> None:
    mission_id = d.mission()
    out = d.ok("mission.pause", {"mission_id": mission_id, "sender": "alice"})
    assert (out["body"], out["sender"]) == ("pause", "alice")


# -- what both transports check besides the table ----------------------------------------------


@dataclass(frozen=True)
class BadCall:
    """Arguments a tool refuses, the same input through REST, and the sentence both answer."""

    tool: str
    args: dict
    rest: tuple[str, str, dict | None]  # method, path, JSON body
    status: int
    detail: str


NO_SUCH_MISSION = "00000000-0000-4000-8000-000000000000"
BAD_CALLS = [
    BadCall(
        "task.get",
        {"task_id": "nope"},
        ("GET", "/v1/tasks/nope", None),
        400,
        "invalid task id 'nope': expected a UUID",
    ),
    BadCall(
        "backlog.add",
        {"description": "  "},
        ("POST", "/v1/backlog", {"description": "  "}),
        422,
        "field 'description' must not be empty",
    ),
    BadCall("agent.spawn", {}, ("POST", "/v1/agents", {}), 422, "field 'name' is required"),
    BadCall(
        "task.assign",
        {"agent": "nobody-here", "description": "x"},
        ("POST", "/v1/tasks/assign", {"agent": "nobody-here", "description": "x"}),
        404,
        "agent 'nobody-here' not found",
    ),
    BadCall(
        "mission.get_status",
        {"mission_id": NO_SUCH_MISSION},
        ("GET", f"/v1/missions/{NO_SUCH_MISSION}", None),
        404,
        f"mission {NO_SUCH_MISSION} not found",
    ),
]


def tool_dumps(result: types.ListToolsResult) -> list[dict]:
    """The tools as the wire carried them (our dicts, after the SDK's round trip)."""
    return [t.model_dump(by_alias=True, exclude_none=True, mode="json") for t in result.tools]
