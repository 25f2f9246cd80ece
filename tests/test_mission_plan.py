"""The dispatcher's decisions as a pure function (tinytown/core/mission_plan.py), and the
checks of what a client gives (tinytown/core/work_items.py): no Redis, no processes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinytown.core import events as ev
from tinytown.core import work_items
from tinytown.core.inputs import InputError
from tinytown.core.mission_notes import read_note, redirect, retry_failed
from tinytown.core.mission_plan import TaskView, plan, review_rejects, task_id_for
from tinytown.core.missions import json_now, new_mission, summary
from tinytown.core.work_items import new_item_documents, parse_items, parse_policy

T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def mission_with(raw_items, **policy):
    m = new_mission("m1", [], parse_policy(policy), None, json_now(T0)).data
    m["state"] = "running"
    return m, new_item_documents("m1", parse_items(raw_items), json_now(T0))


def step(mission, items, tasks=(), *, at=T0, live=1):
    return plan(
        mission,
        items,
        {t.id: t for t in tasks},
        now=at,
        ts=json_now(at),
        live_workers=live,
    )


def apply(items, result):
    return [result.items.get(i["id"], i) for i in items]


def by_key(items):
    return {i["key"]: i for i in items}


CHAIN = [
    {"key": "a", "title": "A"},
    {"key": "b", "title": "B", "depends_on": ["a"]},
    {"key": "c", "title": "C", "depends_on": ["a"]},
    {"key": "d", "title": "D", "depends_on": ["b", "c"]},
]


def test_ready_items_are_queued_up_to_the_parallel_limit_after_their_dependencies():
    mission, items = mission_with(CHAIN, max_parallel_items=1)
    first = step(mission, items)
    items = apply(items, first)
    assert by_key(items)["a"]["status"] == "assigned" and len(first.tasks) == 1
    assert {by_key(items)[k]["status"] for k in "bcd"} == {"pending"}
    done = TaskView(first.tasks[0].id, "completed", "did A")
    second = step(mission, items, [done])
    items = apply(items, second)
    assert by_key(items)["a"]["status"] == "done" and by_key(items)["a"]["result"] == "did A"
    # b and c are both ready; one slot: only b is queued (stored order)
    assert [by_key(items)[k]["status"] for k in "bcd"] == ["assigned", "ready", "pending"]
    assert [t.item_id for t in second.tasks] == [by_key(items)["b"]["id"]]
    assert "did A" in second.tasks[0].description
    types = [e["event_type"] for e in second.events]
    assert types == [
        ev.MISSION_WORK_COMPLETED,
        ev.MISSION_WORK_PROMOTED,
        ev.MISSION_WORK_PROMOTED,
        ev.MISSION_WORK_ASSIGNED,
    ]


def test_the_last_item_done_completes_the_mission_with_its_event():
    mission, items = mission_with([{"key": "a", "title": "A"}])
    items = apply(items, r := step(mission, items))
    r = step(mission, items, [TaskView(r.tasks[0].id, "completed", "")])
    assert r.mission["state"] == "completed"
    assert r.events[-1]["event_type"] == ev.MISSION_STATE_CHANGED
    assert r.events[-1]["new_state"] == "completed"


def test_a_failed_task_fails_its_item_and_the_mission_naming_them():
    mission, items = mission_with([{"key": "a", "title": "A"}, {"key": "b", "title": "B"}])
    items = apply(items, r := step(mission, items))
    failed = TaskView(r.tasks[0].id, "failed", "failed after 3 attempts\ntrace")
    r = step(mission, items, [failed, TaskView(r.tasks[1].id, "running")])
    assert r.mission["state"] == "failed"
    assert r.mission["blocked_reason"] == "work item a failed: failed after 3 attempts"
    assert by_key(apply(items, r))["b"]["status"] == "running"


def test_a_vanished_task_is_queued_again_under_a_new_id():
    mission, items = mission_with([{"key": "a", "title": "A"}])
    items = apply(items, r := step(mission, items))
    old = r.tasks[0].id
    r = step(mission, items)  # no task with that id any more
    assert [e["event_type"] for e in r.events][:1] == [ev.MISSION_WORK_REQUEUED]
    assert len(r.tasks) == 1 and r.tasks[0].id != old


def test_task_ids_are_the_same_for_the_same_step():
    mission, items = mission_with(CHAIN)
    assert [t.id for t in step(mission, items).tasks] == [t.id for t in step(mission, items).tasks]
    item = items[0]
    assert task_id_for(item, "work") != task_id_for({**item, "round": 1}, "work")


def test_review_rejection_leads_to_a_fix_then_a_second_review_then_approval():
    mission, items = mission_with([{"key": "a", "title": "A"}], reviewer_required=True)
    items = apply(items, r := step(mission, items))
    items = apply(items, r := step(mission, items, [TaskView(r.tasks[0].id, "completed", "x")]))
    (review,) = r.tasks
    assert review.stage == "review" and by_key(items)["a"]["status"] == "blocked"
    verdict = "Changes requested: handle empty input\nmore"
    items = apply(items, r := step(mission, items, [TaskView(review.id, "completed", verdict)]))
    (fix,) = r.tasks
    assert fix.stage == "fix" and "Changes requested: handle empty input" in fix.description
    items = apply(items, r := step(mission, items, [TaskView(fix.id, "completed", "fixed")]))
    (second,) = r.tasks
    assert second.stage == "review" and second.id != review.id
    items = apply(items, r := step(mission, items, [TaskView(second.id, "completed", "ok")]))
    assert by_key(items)["a"]["status"] == "done" and by_key(items)["a"]["reviewer_approved"]
    assert r.mission["state"] == "completed"


def test_rejections_past_max_attempts_fail_the_item():
    mission, items = mission_with(
        [{"key": "a", "title": "A"}], reviewer_required=True, max_attempts=1
    )
    items = apply(items, r := step(mission, items))
    items = apply(items, r := step(mission, items, [TaskView(r.tasks[0].id, "completed", "x")]))
    r = step(mission, items, [TaskView(r.tasks[0].id, "completed", "rejected: wrong approach")])
    assert by_key(apply(items, r))["a"]["status"] == "failed"
    assert (
        r.mission["state"] == "failed" and "rejected: wrong approach" in r.mission["blocked_reason"]
    )


def test_design_items_are_not_reviewed():
    mission, items = mission_with(
        [{"key": "a", "title": "A", "kind": "design"}], reviewer_required=True
    )
    items = apply(items, r := step(mission, items))
    r = step(mission, items, [TaskView(r.tasks[0].id, "completed", "x")])
    assert r.mission["state"] == "completed" and r.tasks == []


@pytest.mark.parametrize(
    ("text", "rejects"),
    [
        ("rejected: no", True),
        ("  \nChanges requested: more tests", True),
        ("approved", False),
        ("", False),
        ("I rejected: nothing", False),
    ],
)
def test_a_review_rejects_only_by_its_first_line(text, rejects):
    assert review_rejects(text) is rejects


def test_help_is_asked_once_per_reason_and_again_after_the_backoff():
    mission, items = mission_with([{"key": "a", "title": "A"}], help_after_secs=60)
    items = apply(items, r := step(mission, items))
    pending = TaskView(r.tasks[0].id, "pending")
    quiet = step(mission, items, [pending], at=T0 + timedelta(seconds=30), live=0)
    assert quiet.events == []
    late = T0 + timedelta(seconds=61)
    r = step(mission, items, [pending], at=late, live=0)
    (help_event,) = r.events
    assert help_event["event_type"] == ev.MISSION_HELP_NEEDED
    assert "no worker is live" in help_event["reason"]
    mission = r.mission
    assert step(mission, items, [pending], at=late + timedelta(seconds=60), live=0).events == []
    again = step(mission, items, [pending], at=late + timedelta(seconds=121), live=0)
    assert [e["event_type"] for e in again.events] == [ev.MISSION_HELP_NEEDED]
    with_worker = step(mission, items, [pending], at=late + timedelta(seconds=30), live=1)
    assert "made no progress" in with_worker.events[0]["reason"]


def test_an_item_whose_task_runs_on_a_live_worker_is_progress_however_long_it_runs():
    # A healthy agent running a long task used to page the phone every help_after_secs.
    mission, items = mission_with([{"key": "a", "title": "A"}], help_after_secs=60)
    items = apply(items, r := step(mission, items))
    task_id = r.tasks[0].id
    items = apply(items, step(mission, items, [TaskView(task_id, "running", worker_alive=True)]))
    late = T0 + timedelta(hours=2)
    working = step(mission, items, [TaskView(task_id, "running", worker_alive=True)], at=late)
    assert working.events == []
    # the same task on a worker that stopped beating: a person may be needed
    silent = step(mission, items, [TaskView(task_id, "running", worker_alive=False)], at=late)
    (help_event,) = silent.events
    assert "made no progress" in help_event["reason"]


def test_a_stopped_mission_records_finished_tasks_but_queues_nothing():
    mission, items = mission_with(CHAIN)
    items = apply(items, r := step(mission, items))
    mission = {**mission, "state": "blocked"}
    r = step(mission, items, [TaskView(r.tasks[0].id, "completed", "")])
    assert r.tasks == [] and by_key(apply(items, r))["a"]["status"] == "done"
    assert by_key(apply(items, r))["b"]["status"] == "pending"


def test_notes_are_read_and_retry_and_redirect_change_items():
    assert read_note("Retry please").action == "resume"
    assert read_note("hold on").action == "pause"
    note = read_note("redirect build to alice because she knows it")
    assert (note.action, note.item, note.agent, note.reason) == (
        "redirect",
        "build",
        "alice",
        "because she knows it",
    )
    assert read_note("nice work").action == "note"
    mission, items = mission_with(CHAIN)
    items[0]["status"], items[0]["task_id"] = "failed", "t"
    changed, events = retry_failed("m1", items, json_now(T0))
    (item,) = changed.values()
    assert item["status"] == "pending" and item["task_id"] is None and item["dispatches"] == 1
    items[1]["status"], items[1]["task_id"] = "running", "t2"
    changed, events, cancel = redirect("m1", items, None, "agent-1", json_now(T0))
    (item,) = changed.values()
    assert cancel == "t2" and item["status"] == "ready" and item["assign_to"] == "agent-1"
    with pytest.raises(ValueError, match="no unfinished work item 'zzz'"):
        redirect("m1", items, "zzz", "agent-1", json_now(T0))


def test_items_are_checked_naming_the_field():
    cases = [
        ([], "items"),
        ([{"key": "a"}], "items[0].title"),
        ([{"key": "a b", "title": "x"}], "items[0].key"),
        ([{"key": "a", "title": "x", "kind": "party"}], "items[0].kind"),
        ([{"key": "a", "title": "x", "nope": 1}], "items[0].nope"),
        ([{"key": "a", "title": "x"}, {"key": "a", "title": "y"}], "items[1].key"),
        ([{"key": "a", "title": "x", "depends_on": "b"}], "items[0].depends_on"),
        ([{"key": "a", "title": "x", "push": "yes"}], "items[0].push"),
        ([{"key": "a", "title": "\ud800"}], "items[0].title"),
    ]
    for raw, field in cases:
        with pytest.raises(InputError) as err:
            parse_items(raw)
        assert err.value.field == field, (raw, err.value)
    with pytest.raises(InputError) as err:
        parse_policy({"max_parallel_items": 0})
    assert err.value.field == "policy.max_parallel_items"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(0, 30), max_size=4), min_size=1, max_size=30))
def test_any_dag_runs_to_completion_in_dependency_order(deps):
    """Items whose dependencies point only backwards always complete, each after its deps."""
    raw = [
        {"key": f"k{i}", "title": f"t{i}", "depends_on": sorted({f"k{d}" for d in ds if d < i})}
        for i, ds in enumerate(deps)
    ]
    mission, items = mission_with(raw, max_parallel_items=3)
    finished: list[str] = []
    for _ in range(3 * len(raw) + 3):
        r = step(
            mission,
            items,
            [TaskView(i["task_id"], "completed", "") for i in items if i.get("task_id")],
        )
        items = apply(items, r)
        mission = r.mission or mission
        finished += [e["key"] for e in r.events if e["event_type"] == ev.MISSION_WORK_COMPLETED]
        if mission["state"] == "completed":
            break
    assert mission["state"] == "completed" and summary(items)["progress"] == 1.0
    position = {k: n for n, k in enumerate(finished)}
    for item in raw:
        assert all(position[d] < position[item["key"]] for d in item["depends_on"])


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
ITEM_FIELDS = st.sampled_from(work_items.ITEM_FIELDS)


# a valid item with some fields replaced by anything JSON can hold
ITEMS = st.lists(
    st.builds(
        lambda n, extra: {"key": f"k{n}", "title": "t", **extra},
        st.integers(0, 3),
        st.dictionaries(ITEM_FIELDS, JSON, max_size=3),
    )
    | JSON,
    max_size=4,
)


@settings(max_examples=400, deadline=None)
@given(ITEMS, st.dictionaries(st.text(max_size=20), JSON, max_size=3) | JSON)
def test_any_document_is_either_accepted_or_refused_naming_a_field(items, policy):
    """Whatever a client sends as items and policy, the checks answer with work items or an
    InputError naming the field — never another exception (a 500 over REST)."""
    for check in (lambda: parse_items(items), lambda: parse_policy(policy)):
        try:
            check()
        except InputError as err:
            assert err.field and str(err)
