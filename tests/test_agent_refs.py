"""Naming an agent reads only the records that answer to the name (decision 4): names,
nicknames and short ids are indexed. Before, every REST/MCP/tt path that took a name (and every
worker's registration, under a WATCH) read every agent record of the town: a 404 for an
unknown name cost as much as a hit, 466 ms at 20,000 agents."""

from __future__ import annotations

import pytest

from tinytown.core.errors import NotFound
from tinytown.core.liveness import Beat
from tinytown.store import Town
from tinytown.store.agent_names import NameTaken

from .redis_reads import calls

MANY = 200


def reads(town: Town, call) -> int:
    """How many agent records (HGETALLs) ``call()`` reads."""
    return calls(town, "hgetall", call)


@pytest.fixture
def crowd(town):
    """Many agents the names asked for are not."""
    return [town.agents.register(f"crowd-{i}", "fake").id for i in range(MANY)]


def test_a_name_or_an_unknown_name_reads_only_the_records_that_answer_to_it(town, crowd):
    target = town.agents.register("carol", "fake")
    assert reads(town, lambda: town.agents.resolve("CAROL")) == 1
    assert reads(town, lambda: pytest.raises(NotFound, town.agents.resolve, "nobody")) == 0
    assert town.agents.resolve("carol").id == target.id


def test_nicknames_and_short_ids_resolve_through_the_index(town):
    agent = town.agents.register("bob", "fake")
    assert town.agents.resolve(agent.nickname.upper()).id == agent.id
    assert town.agents.resolve(agent.short_id()).id == agent.id


def test_a_name_beats_a_nickname(town):
    other = town.agents.register("someone", "fake")
    named = town.agents.register(other.nickname.lower(), "fake")
    assert town.agents.resolve(other.nickname).id == named.id


def test_a_worker_adopting_its_id_under_a_new_name_is_found_by_the_new_name_only(town):
    agent = town.agents.register("before", "fake")
    town.agents.register("after", "fake", agent_id=agent.id)
    assert town.agents.resolve("after").id == agent.id
    with pytest.raises(NotFound):
        town.agents.resolve("before")


def test_a_deleted_agent_leaves_the_index(town):
    agent = town.agents.register("gone", "fake")
    town.agents.delete(agent.id)
    with pytest.raises(NotFound):
        town.agents.resolve("gone")
    assert not town.redis.sismember(town.keys.agents_named("gone"), agent.id)
    assert not town.redis.sismember(town.keys.agents_called(agent.nickname), agent.id)


def test_a_live_name_is_still_refused_to_a_second_worker_whatever_the_towns_size(town, crowd):
    town.agents.register("solo", "fake", unique_name=True)

    def refused():
        with pytest.raises(NameTaken):
            town.agents.register("solo", "fake", unique_name=True)

    small = reads(town, refused)
    for i in range(MANY):
        town.agents.register(f"more-{i}", "fake")
    assert reads(town, refused) == small  # the holder's record, not the crowd's


def test_a_town_made_before_the_index_gets_it_when_a_program_connects(town):
    agent = town.agents.register("old-timer", "fake")
    town.agents.update(agent.id, beat=Beat(5))
    for key in (
        town.keys.agents_refs_indexed,
        town.keys.agents_named("old-timer"),
        town.keys.agents_called(agent.nickname),
        town.keys.agents_called(agent.short_id()),
    ):
        town.redis.delete(key)
    assert town.agents.resolve("old-timer").id == agent.id  # (read the slow way meanwhile)
    again = Town.connect(town.config)
    assert again.redis.exists(town.keys.agents_refs_indexed)
    assert again.redis.sismember(town.keys.agents_named("old-timer"), agent.id)
    assert again.agents.resolve(agent.nickname).id == agent.id
    again.close()
