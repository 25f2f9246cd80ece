"""The words on the wire between townhall and the scaler come from one place, the core: the agent
states townhall reports (REST form, ``"Idle"``) and the recommendations of ``/api/scaling``.
What townhall can say, the scaler reads; what the scaler names, townhall can say.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from tinytown.core import states
from tinytown.core.scaling import RECOMMENDATIONS, ScalingInput, scaling_signal
from tinytown.core.states import AGENT_REST_STATES, AGENT_STATES, rest_state
from tinytown.scaler import wire
from tinytown.scaler.errors import Malformed
from tinytown.scaler.wire import parse_agents, parse_signal

NOW = datetime(2027, 1, 15, 8, 0, tzinfo=UTC)


def agent_item(state: str) -> dict:
    return {
        "id": "a1",
        "name": "w1",
        "state": state,
        "current_task": None,
        "last_heartbeat": "2027-01-15T08:00:00+00:00",
    }


def test_the_scaler_takes_the_agent_states_and_recommendations_from_the_core():
    assert wire.AGENT_STATES is AGENT_REST_STATES
    assert wire.RECOMMENDATIONS is RECOMMENDATIONS


@pytest.mark.parametrize("state", AGENT_STATES)
def test_every_agent_state_townhall_reports_is_read(state):
    assert parse_agents({"agents": [agent_item(rest_state(state))]})["a1"].state == rest_state(
        state
    )


@pytest.mark.parametrize("state", [*AGENT_STATES, "Sleeping"])  # lowercase: Redis's form
def test_a_state_not_in_its_rest_form_is_malformed(state):
    with pytest.raises(Malformed, match="state"):
        parse_agents({"agents": [agent_item(state)]})


def test_the_states_the_scaler_names_are_agent_states():
    named = {wire.IDLE, wire.WORKING, wire.ERROR, *wire.BUSY_AGENT_STATES}
    assert named <= set(AGENT_REST_STATES)
    assert wire.ACTIVE_AGENT_STATES == {rest_state(s) for s in states.ACTIVE_AGENT_STATES}


def test_the_down_recommendations_are_recommendations():
    assert wire.DOWN_RECOMMENDATIONS <= set(RECOMMENDATIONS)


def test_every_signal_townhall_computes_is_read_and_every_recommendation_occurs():
    seen = set()
    for pending, in_flight, state, count, max_agents in itertools.product(
        (0, 2), (0, 1), ("idle", "working", "starting"), (0, 1, 3), (0, 10)
    ):
        document = scaling_signal(
            ScalingInput(
                town="t",
                now=NOW,
                pending_tasks=pending,
                in_flight_tasks=in_flight,
                agents_by_state={state: count},
                idle_last_active=[NOW - timedelta(hours=1)] * count,
                max_agents=max_agents,
                idle_timeout_secs=300,
            )
        )
        signal = parse_signal(document)
        assert signal.scaling_recommendation == document["scaling_recommendation"]
        seen.add(signal.scaling_recommendation)
    assert seen == set(RECOMMENDATIONS)
