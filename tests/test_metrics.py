"""/metrics: upstream's names, HELP texts and order, values from Redis at scrape time, 503 body."""

from __future__ import annotations

import re

from tinytown.api import create_app
from tinytown.config import load_config
from tinytown.connection.client import make_client
from tinytown.store import Town

from .api_support import SpecClient, app, client  # noqa: F401 - fixtures

# Upstream's series, in upstream's order, with its HELP strings word for word
# (upstream-tinytown.md §10.2; copied here because CI cannot read ../shared).
UPSTREAM_HELP = [
    ("tinytown_up", "Whether the townhall process is running."),
    ("tinytown_ready", "Whether townhall can reach its Redis-backed town state."),
    ("tinytown_agents_total", "Number of registered agents by state."),
    ("tinytown_tasks_pending", "Number of queued tasks across backlog and agent inboxes."),
    ("tinytown_tasks_completed_total", "Total completed tasks persisted in town state."),
    ("tinytown_missions_active", "Number of active missions."),
    ("tinytown_redis_latency_seconds", "Redis round-trip latency for this scrape."),
    ("tinytown_backlog_tasks", "Tasks currently in the global backlog."),
    ("tinytown_tasks_assigned_pending", "Pending assigned tasks across all agents."),
    ("tinytown_urgent_messages", "Urgent inbox messages across agents in an active state."),
]
# Added here, after upstream's (issue 13: cost)
ADDED_HELP = [
    ("tinytown_worker_seconds_total", "Seconds coding CLIs have run, every attempt of every task."),
    (  # issue 16: the idle cost, as rate(...[5m]) * 60
        "tinytown_redis_commands_total",
        "Commands the town's Redis server has processed (all clients).",
    ),
]


def parse(text: str) -> dict[str, float]:
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def test_series_names_help_texts_and_order_are_upstreams(client):
    resp = client.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = resp.get_data(as_text=True)
    assert re.findall(r"^# HELP (\S+) (.*)$", text, re.M) == UPSTREAM_HELP + ADDED_HELP
    assert re.search(r"^# TYPE tinytown_tasks_completed_total counter$", text, re.M)


def test_values_come_from_the_towns_indexes(client, town):
    alice = town.agents.register("alice", "claude")
    bob = town.agents.register("bob", "claude")
    town.agents.set_state(alice.id, "ready")
    town.tasks.add("backlog 1")
    town.tasks.add("backlog 2")
    town.tasks.add("for bob", agent_id=bob.id)
    done = town.tasks.add("done")
    town.tasks.complete(done.id, "ok")
    town.inbox.send(bob.id, "now", urgent=True)
    gone = town.agents.register("gone", "claude")
    town.inbox.send(gone.id, "too late", urgent=True)
    town.agents.set_state(gone.id, "kill")  # (a stopped agent's are not waiting for anybody)
    client.post("/v1/missions", json={"objectives": [{"type": "doc", "path": "x.md"}]})
    v = parse(client.get("/metrics").get_data(as_text=True))
    assert (
        v['tinytown_agents_total{state="idle"}'] == 1
        and v['tinytown_agents_total{state="starting"}'] == 1
    )
    assert 'tinytown_agents_total{state="working"}' not in v  # only states with agents
    assert (
        v["tinytown_backlog_tasks"],
        v["tinytown_tasks_assigned_pending"],
        v["tinytown_tasks_pending"],
    ) == (2, 1, 3)
    assert v["tinytown_tasks_completed_total"] == 1 and v["tinytown_missions_active"] == 1
    assert v["tinytown_urgent_messages"] == 1 and v["tinytown_up"] == 1 and v["tinytown_ready"] == 1
    assert 0 < v["tinytown_redis_latency_seconds"] < 1


def test_two_app_instances_report_the_same_numbers(town):
    """Like two gunicorn workers: nothing is per-process, both read Redis at scrape time."""
    one, two = (
        SpecClient(create_app(town.config, town=town)),
        SpecClient(create_app(town.config, town=town)),
    )
    one.post("/v1/backlog", json={"description": "x"})
    a, b = (
        parse(one.get("/metrics").get_data(as_text=True)),
        parse(two.get("/metrics").get_data(as_text=True)),
    )
    for changing in ("tinytown_redis_latency_seconds", "tinytown_redis_commands_total"):
        a.pop(changing), b.pop(changing)  # a round trip's time; the scrapes' own commands
    assert a == b and a["tinytown_backlog_tasks"] == 1


def test_unreachable_redis_gives_upstreams_503_body(tmp_path):
    (tmp_path / "tinytown.toml").write_text(
        'name = "down"\n[redis]\nurl = "redis://127.0.0.1:1/0"\n'
    )
    config = load_config(tmp_path, env={})
    client = SpecClient(create_app(config, town=Town(config, make_client(config))))
    resp = client.get("/metrics")
    text = resp.get_data(as_text=True)
    assert resp.status_code == 503
    values = parse(text)
    assert values.pop("tinytown_up") == 1 and values.pop("tinytown_ready") == 0
    assert set(values.values()) == {0} and not any(
        k.startswith("tinytown_agents_total") for k in values
    )
    last = text.strip().splitlines()[-1]
    assert last.startswith("# tinytown_metrics_error ") and "Connection refused" in last


def test_redis_commands_total_counts_what_the_server_processed(client, town):
    """The idle-cost figure: the server's own count, which grows with every command sent."""
    first = parse(client.get("/metrics").get_data(as_text=True))["tinytown_redis_commands_total"]
    for _ in range(25):
        town.redis.ping()
    second = parse(client.get("/metrics").get_data(as_text=True))["tinytown_redis_commands_total"]
    assert second - first >= 25
