"""Record encodings: a task survives the trip through its Redis hash, whatever fields it has."""

from __future__ import annotations

from dataclasses import fields

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinytown.core.records import TASK_OPTIONAL_FIELDS, Task


def full_task() -> Task:
    return Task(
        id="t1",
        description="d",
        state="running",
        created_at="2026-01-01T00:00:00+00:00",
        updated_at="2026-01-01T00:00:01+00:00",
        tags=["a", "b"],
        assigned_to="ag",
        started_at="s",
        completed_at="c",
        result="r",
        parent_id="p",
        attempts=3,
        repo="/r",
        base_branch="main",
        push=True,
        cli="codex",
        branch="tt/t1",
        commit="abc",
        mission_id="m1",
        work_item_id="w1",
        max_attempts=2,
        worker_secs=12.5,
        cost=0.25,
    )


def test_every_field_is_encoded_and_read_back():
    task = full_task()
    stored = task.to_hash()
    assert set(stored) == {f.name for f in fields(Task)}
    assert Task.from_hash(stored) == task


def test_unset_optionals_are_left_out_and_read_back_as_none():
    task = Task(id="t2", description="d", created_at="x", updated_at="x")
    stored = task.to_hash()
    assert not set(TASK_OPTIONAL_FIELDS) & set(stored)
    assert "push" not in stored and stored["tags"] == "[]" and stored["attempts"] == "0"
    assert Task.from_hash(stored) == task


def test_optional_fields_are_exactly_the_ones_that_may_be_none():
    may_be_none = {f.name for f in fields(Task) if "None" in str(f.type)}
    assert set(TASK_OPTIONAL_FIELDS) == may_be_none


# The fields a submit may set on a new task (TaskStore.add's options), each present or not.
_CREATION = {
    "assigned_to": st.text(min_size=1, max_size=8),
    "parent_id": st.text(min_size=1, max_size=8),
    "repo": st.text(min_size=1, max_size=8),
    "base_branch": st.text(min_size=1, max_size=8),
    "cli": st.text(min_size=1, max_size=8),
    "mission_id": st.text(min_size=1, max_size=8),
    "work_item_id": st.text(min_size=1, max_size=8),
    "max_attempts": st.integers(min_value=1, max_value=9),
}


@settings(max_examples=200, deadline=None)
@given(
    optional=st.fixed_dictionaries({}, optional={k: v | st.none() for k, v in _CREATION.items()}),
    tags=st.lists(st.text(max_size=5), max_size=3),
    push=st.booleans(),
)
def test_a_new_tasks_hash_is_what_the_task_stores(optional, tags, push):
    """``Task.new_hash`` (the submit path's, made without a Task) is ``to_hash`` of that task,
    and reads back as it."""
    ts = "2026-01-01T00:00:00+00:00"
    task = Task(
        id="t1", description="d", state="pending", created_at=ts, updated_at=ts, tags=tags,
        push=push, **optional,
    )  # fmt: skip
    made = Task.new_hash("t1", "d", "pending", ts, tags, push=push, **optional)
    assert made == task.to_hash()
    assert Task.from_hash(made) == task


def test_a_new_hash_refuses_a_field_a_task_does_not_have():
    with pytest.raises(TypeError, match="repository"):
        Task.new_hash("t1", "d", "pending", "2026-01-01T00:00:00+00:00", [], repository="/r")
