"""What the status page and a metrics scrape read does not grow with the agents a town ever had
(decision 4): both read the agents in an active state from the deadlines index, and count the
rest. Before, each read every agent record (the page) or two lists per agent (a scrape): 415 ms
a scrape at 20,000 agents, mostly stopped ones."""

from __future__ import annotations

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
    few = calls(keyed_town, "llen", lambda: client.get("/metrics", headers=key))
    stop_many(keyed_town, STOPPED)
    assert calls(keyed_town, "llen", lambda: client.get("/metrics", headers=key)) == few
