"""The one table of states (tinytown/core/states.py) is the only place a state set or a transition
rule is spelled: its moves name known states, the Lua scripts are filled from it, and no other
product module writes a set of state names of its own."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tinytown.core import states
from tinytown.core.records import Agent, Task
from tinytown.store import scripts

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = [p for p in (ROOT / "tinytown").rglob("*.py")] + [
    ROOT / "agent_worker.py",
    ROOT / "scaler.py",
    ROOT / "townhall.py",
]
STATE_NAMES = (
    set(states.TASK_STATES)
    | set(states.AGENT_STATES)
    | set(states.MISSION_STATES)
    | set(states.WORK_STATUSES)
)


@pytest.mark.parametrize("machine", states.MACHINES, ids=lambda m: m.kind)
def test_every_move_names_states_of_its_machine(machine):
    machine.check()
    assert machine.moves and all(move.source or move.target for move in machine.moves.values())


def test_no_product_module_but_the_table_spells_a_set_of_states():
    """A tuple, list or set of two or more state names anywhere else is a rule spelled twice."""
    offenders = []
    for path in PRODUCT:
        if path == ROOT / "tinytown" / "core" / "states.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Tuple, ast.List, ast.Set)) and len(node.elts) >= 2:
                values = [
                    e.value
                    for e in node.elts
                    if isinstance(e, ast.Constant) and isinstance(e.value, str)
                ]
                if len(values) == len(node.elts) and set(values) <= STATE_NAMES:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {values}")
    assert offenders == []


def test_the_lua_scripts_spell_no_state_and_carry_the_tables_rules():
    source = (ROOT / "tinytown" / "store" / "scripts.py").read_text()
    lua_literals = set(re.findall(r"'([a-z_]+)'", source))
    assert lua_literals & STATE_NAMES == set()
    take_shared = "," + ",".join(states.TASK["take_shared"].source) + ","
    take_directed = "," + ",".join(states.TASK["take_directed"].source) + ","
    assert (
        f"'{take_shared}'" in scripts.DOCKET_CLAIM and f"'{take_directed}'" in scripts.DOCKET_CLAIM
    )
    assert f"'{states.TASK['take_shared'].target}'" in scripts.DOCKET_CLAIM
    assert f"'{states.BACKLOG_STATE}'" in scripts.TASK_TRANSITION


def test_records_read_missing_or_odd_states_by_the_tables_rules():
    assert Task.from_hash({"id": "t"}).state == states.TASK_DEFAULT_STATE
    ((alias, meaning),) = states.TASK_STATE_ALIASES.items()
    assert Task.from_hash({"id": "t", "state": alias}).state == meaning
    assert Task.from_hash({"id": "t", "state": "bogus"}).state == states.TASK_DEFAULT_STATE
    assert Agent.from_hash({"id": "a", "state": "bogus"}).state == states.AGENT_DEFAULT_STATE


def test_a_move_narrowed_to_a_state_it_does_not_leave_from_allows_nothing():
    assert states.TASK["requeue"].narrowed("running") == ("running",)
    assert states.TASK["requeue"].narrowed("completed") == ()
    assert states.TASK["complete"].narrowed(None) == states.LIVE_TASK_STATES
