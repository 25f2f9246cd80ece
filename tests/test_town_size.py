"""What a big or quiet town costs (decisions 4 and 12). The status page and a metrics scrape
read the agents in an active state from the deadlines index, and count the rest (each read every
agent record, or two lists per agent ever registered: 415 ms a scrape at 20,000 agents, mostly
stopped ones). The mission dispatcher's backstop steps a quiet mission less and less often."""

from __future__ import annotations

import time

import pytest

from tinytown.core import defaults
from tinytown.core.errors import Full
from tinytown.missions.dispatcher import Dispatcher
from tinytown.missions.start import start_mission

from .api_support import keyed_app, keyed_town, keyring  # noqa: F401 - fixtures
from .redis_reads import calls

STOPPED = 150


def stop_many(town, n: int) -> None:
    for i in range(n):
        agent = town.agents.register(f"old-{i}", "fake")
        town.agents.set_state(agent.id, "kill")


def test_the_status_page_reads_no_stopped_agents_record(keyed_app, keyed_town, keyring):
    client = keyed_app.test_client()
    key = {"X-API-Key": keyring["read"][0]}
    live = keyed_town.agents.register("live-one", "fake")
    keyed_town.agents.set_state(live.id, "ready")
    stop_many(keyed_town, 3)
    client.get("/", headers=key)  # (the first view also fills what later ones reuse)
    few = calls(keyed_town, "hgetall", lambda: client.get("/", headers=key))
    stop_many(keyed_town, STOPPED)
    page = client.get("/", headers=key)
    assert calls(keyed_town, "hgetall", lambda: client.get("/", headers=key)) == few
    html = page.get_data(as_text=True)
    assert "live-one" in html and "old-1" not in html
    assert f"{STOPPED + 3} stopped agent(s) not shown" in html


def test_a_metrics_scrape_reads_no_stopped_agents_inbox(keyed_app, keyed_town, keyring):
    client = keyed_app.test_client()
    key = {"X-API-Key": keyring["read"][0]}
    stop_many(keyed_town, 3)
    client.get("/metrics", headers=key)  # (the first scrape also fills what later ones reuse)
    few = calls(keyed_town, "llen", lambda: client.get("/metrics", headers=key))
    stop_many(keyed_town, STOPPED)
    assert calls(keyed_town, "llen", lambda: client.get("/metrics", headers=key)) == few


def test_a_quiet_mission_is_stepped_less_and_less_often_and_at_once_on_an_event(town):
    """The backstop stepped every active mission every tick (about 30 commands each), so an
    idle town with missions waiting on a long run or on a person paid hundreds of commands a
    minute per mission."""
    mission, _ = start_mission(
        town, items=[{"key": "a", "title": "A"}, {"key": "b", "title": "B", "depends_on": ["a"]}]
    )
    dispatcher = Dispatcher(town, tick_secs=0.05)
    dispatcher.run_once(wait=False)  # queues item a's task; nothing else can happen now

    def steps_in(secs: float) -> int:
        def loop():
            end = time.monotonic() + secs
            while time.monotonic() < end:
                dispatcher.run_once()

        return calls(town, "hvals", loop)  # (each step reads the mission's notes once)

    quiet = steps_in(2.0)
    assert 2 <= quiet <= 8  # 0.1, 0.2, 0.4, 0.8 s apart …; every 0.05 s it was 40
    task_a = next(i for i in town.missions.work_items(mission.id) if i["key"] == "a")["task_id"]
    town.tasks.complete(task_a, "done")  # an event about it: stepped at once
    dispatcher.run_once(wait=False)
    dispatcher.run_once(wait=False)
    items = {i["key"]: i for i in town.missions.work_items(mission.id)}
    assert items["a"]["status"] == "done" and items["b"]["task_id"]


def test_an_inbox_takes_a_bounded_number_of_messages_and_a_prompt_a_bounded_share(town):
    """Sends had no bound, and a worker's claim read both lists whole into one prompt (20,000
    messages of 1 KiB: 25 MB and 25 ms of Redis per claim)."""
    agent = town.agents.register("reader", "fake")
    for _ in range(defaults.INBOX_MAX_MESSAGES):
        town.inbox.send(agent.id, "read this", kind="info")
    with pytest.raises(Full, match=f"holds {defaults.INBOX_MAX_MESSAGES} messages"):
        town.inbox.send(agent.id, "one too many", kind="info")
    assert town.redis.llen(town.keys.inbox(agent.id)) == defaults.INBOX_MAX_MESSAGES
    town.inbox.send(agent.id, "urgent still fits", urgent=True)  # (the other list)
    task = town.tasks.add("with mail", agent_id=agent.id)
    docket = town.docket(agent.id)
    docket.ensure_groups()
    delivery = docket.read(1000)
    docket.close()
    urgent, inbox = delivery.claim.peeked
    assert delivery.claim.task.id == task.id
    assert (len(urgent), len(inbox)) == (1, defaults.PROMPT_MESSAGES_MAX)


def test_the_conductors_inbox_keeps_its_newest_and_a_shutdown_always_gets_through(town):
    """Nobody takes from the conductor's inbox, so a bound that refused would refuse for good;
    and a shutdown behind the bound (or behind 100 messages) was never seen."""
    from tinytown.core.records import SUPERVISOR_ID

    most = defaults.INBOX_MAX_MESSAGES
    for i in range(most + 3):
        town.inbox.send(SUPERVISOR_ID, f"report {i}", kind="info")
    kept = town.redis.lrange(town.keys.inbox(SUPERVISOR_ID), 0, -1)
    assert len(kept) == most and "report 3" in kept[0] and f"report {most + 2}" in kept[-1]

    agent = town.agents.register("busy-reader", "fake")
    for _ in range(most):
        town.inbox.send(agent.id, "read this", kind="info")
        town.inbox.send(agent.id, "now", kind="info", urgent=True)
    town.inbox.send(agent.id, "stop", kind="shutdown")
    head = town.redis.lindex(town.keys.urgent(agent.id), 0)
    assert '"shutdown"' in head and town.redis.llen(town.keys.urgent(agent.id)) == most + 1


def test_moving_messages_to_a_full_inbox_moves_nothing(town):
    full = town.agents.register("full", "fake")
    for _ in range(defaults.INBOX_MAX_MESSAGES):
        town.inbox.send(full.id, "x", kind="info")
    gone = town.agents.register("gone", "fake")
    town.inbox.send(gone.id, "keep me", kind="info")
    raw = town.redis.lindex(town.keys.inbox(gone.id), 0)
    assert not town.inbox.move(town.keys.inbox(gone.id), raw, full.id, urgent=False)
    assert town.redis.llen(town.keys.inbox(gone.id)) == 1


def test_a_second_delete_of_an_agent_writes_no_second_event(town):
    agent = town.agents.register("twice", "fake")
    town.agents.delete(agent.id)
    town.agents.delete(agent.id)  # (the keeper's prune racing a REST prune)
    deleted = [e for e in town.events.latest(20) if e["event_type"] == "agent_deleted"]
    assert [e["agent_id"] for e in deleted] == [agent.id]
