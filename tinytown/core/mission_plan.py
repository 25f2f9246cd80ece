"""What a mission's dispatcher does next, decided from what the store holds: a pure function of
the mission, its work items, their tasks and the time (upstream §8.3–8.6, made event-driven).

One :func:`plan` step:

1. **Reconcile** every item in flight with its task: a running task starts the item; a finished
   work task completes it (or, when the policy wants a reviewer, queues a review task); a review
   that starts ``rejected:`` or ``changes requested:`` queues a fix task carrying the review; a
   fix queues the next review; a failed or cancelled task fails the item; a task that vanished
   is queued again.
2. While the mission runs: **promote** pending items whose dependencies are done, **queue**
   ready items' tasks up to ``max_parallel_items``, and **end** the mission: failed if an item
   failed, completed when every item is done.
3. **Help**: ready work and no live worker, or an item with no progress, for ``help_after_secs``
   raises ``mission_help_needed`` (again only when the reason changes, or after a backoff). An
   item whose task runs on a live worker is making progress, however long it runs.

Task ids derive from the item, stage, round and dispatch, so a step that is cut short and run
again makes the same tasks (the store creates a task only if its id is new). Pure: no I/O.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

from tinytown.core import events as ev
from tinytown.core.clock import parse_rfc3339
from tinytown.core.states import MISSION, TASK, TASK_RUNNING, WORK, WORK_IN_FLIGHT_STATUSES
from tinytown.core.work_items import REVIEWED_KINDS

STAGE_WORK, STAGE_REVIEW, STAGE_FIX = "work", "review", "fix"  # the stages of an item's tasks
STAGE_TAGS = {
    STAGE_WORK: "mission-work-item",
    STAGE_REVIEW: "mission-review-task",
    STAGE_FIX: "mission-fix-task",
}
STAGE_TITLES = {
    STAGE_WORK: "Mission Work Item",
    STAGE_REVIEW: "Mission Review",
    STAGE_FIX: "Mission Fix",
}
REJECTIONS = ("rejected:", "changes requested:")
CONTEXT_CHARS = 4000  # at most this much of a dependency's or a review's result in a prompt
HELP_BACKOFF_MAX = 8
_TASK_NAMESPACE = uuid.UUID("0b6c1e9a-3f57-4d1c-8f0e-6a2d4b9c7e31")

_COMPLETED, _FAILED, _CANCELLED = (
    TASK["complete"].target,
    TASK["fail"].target,
    TASK["cancel"].target,
)
_STARTED = TASK["take_shared"].target


@dataclass(frozen=True)
class TaskView:
    """What the planner reads of a task."""

    id: str
    state: str
    result: str | None = None
    worker_secs: float | None = None  # what its runs took, and cost (see records.Task)
    cost: float | None = None
    worker_alive: bool = False  # the agent it is assigned to beats (heartbeat window not over)


@dataclass(frozen=True)
class NewTask:
    """A task to create (only if its id is new) before the plan's item changes are written."""

    id: str
    item_id: str
    stage: str
    description: str
    tags: tuple[str, ...]
    repo: str | None
    base_branch: str | None
    push: bool
    cli: str | None
    max_attempts: int
    agent_id: str | None = None


@dataclass
class Plan:
    items: dict[str, dict] = field(default_factory=dict)  # item id → its new document
    tasks: list[NewTask] = field(default_factory=list)
    mission: dict | None = None  # the mission's new document, if it changed
    events: list[dict] = field(default_factory=list)
    cancel: list[str] = field(default_factory=list)  # task ids to cancel (a redirect)

    @property
    def empty(self) -> bool:
        return not (self.items or self.tasks or self.mission or self.events or self.cancel)


def task_id_for(item: dict, stage: str) -> str:
    name = f"{item['id']}/{stage}/{item.get('round', 0)}/{item.get('dispatches', 0)}"
    return str(uuid.uuid5(_TASK_NAMESPACE, name))


def first_line(text: str | None) -> str:
    for line in (text or "").splitlines():
        if line.strip():
            return line.strip()[:300]
    return ""


def review_rejects(result: str | None) -> bool:
    return first_line(result).lower().startswith(REJECTIONS)


class _Step:
    """One planning step's working state: documents change here and events are collected."""

    def __init__(self, mission: dict, items: list[dict], tasks: dict, now: datetime, ts: str):
        self.mission, self.tasks, self.now, self.ts = dict(mission), tasks, now, ts
        self.items = [dict(i) for i in items]
        self.by_id = {i["id"]: i for i in self.items}
        self.plan = Plan()
        self.policy = mission.get("policy") or {}
        self.original_mission = mission

    # -- changes ----------------------------------------------------------------------------

    def move(self, item: dict, move: str, event_type: str, message: str, **fields) -> None:
        rule = WORK[move]
        old = item["status"]
        if not rule.allows(old):
            return
        item["status"] = rule.target
        item["updated_at"] = item["progress_at"] = self.ts
        item.update(fields)
        self.plan.items[item["id"]] = item
        self.plan.events.append(
            ev.event(
                event_type,
                f"work item {item['key']}: {message}",
                self.ts,
                mission_id=self.mission["id"],
                work_item_id=item["id"],
                task_id=item.get("task_id"),
                key=item["key"],
                stage=item.get("stage"),
                old_state=old,
                new_state=rule.target,
                reason=item.get("reason") if rule.target == WORK["fail"].target else None,
            )
        )

    def queue(self, item: dict, stage: str, description: str, agent_id: str | None = None) -> str:
        item["stage"] = stage
        task = NewTask(
            id=task_id_for(item, stage),
            item_id=item["id"],
            stage=stage,
            description=description,
            tags=(
                STAGE_TAGS[stage],
                f"mission-task:{stage}",
                f"mission:{self.mission['id']}",
                f"work-item:{item['id']}",
            ),
            repo=item.get("repo"),
            base_branch=item.get("base_branch"),
            push=bool(item.get("push")),
            cli=item.get("cli"),
            max_attempts=int(self.policy.get("max_attempts") or 1),
            agent_id=agent_id,
        )
        self.plan.tasks.append(task)
        item["task_id"] = task.id
        return task.id

    def end_mission(self, move: str, reason: str | None) -> None:
        rule = MISSION[move]
        old = self.mission.get("state")
        if not rule.allows(old) or old == rule.target:
            return
        self.mission.update(state=rule.target, blocked_reason=reason, updated_at=self.ts)
        self.plan.mission = self.mission
        done = sum(1 for i in self.items if i["status"] == WORK["complete"].target)
        message = f"mission {self.mission['id']} {rule.target} ({done}/{len(self.items)} items)"
        self.plan.events.append(
            ev.event(
                ev.MISSION_STATE_CHANGED,
                message + (f": {reason}" if reason else ""),
                self.ts,
                mission_id=self.mission["id"],
                old_state=old,
                new_state=rule.target,
                reason=reason,
                items_done=done,
                items_total=len(self.items),
            )
        )

    # -- prompts ----------------------------------------------------------------------------

    def header(self, item: dict, stage: str) -> str:
        return (
            f"[{STAGE_TITLES[stage]}] {item['title']}\n\n"
            f"Mission {self.mission['id']}, work item {item['key']} ({item['kind']})."
        )

    def work_prompt(self, item: dict) -> str:
        parts = [self.header(item, STAGE_WORK)]
        if item.get("description"):
            parts.append(item["description"])
        for dep_id in item.get("depends_on") or []:
            dep = self.by_id.get(dep_id)
            if dep and dep.get("result"):
                parts.append(
                    f"Result of {dep['key']} ({dep['title']}), which this item depends on:\n"
                    + dep["result"][-CONTEXT_CHARS:]
                )
        return "\n\n".join(parts)

    def review_prompt(self, item: dict, work_result: str | None) -> str:
        return "\n\n".join(
            [
                self.header(item, STAGE_REVIEW),
                "Review the work done for this item.",
                "The item:\n" + (item.get("description") or item["title"]),
                "What the work reported:\n" + (work_result or "(nothing)")[-CONTEXT_CHARS:],
                "Answer with a first line `approved`, or `changes requested: <what to change>`, "
                "or `rejected: <why>`.",
            ]
        )

    def fix_prompt(self, item: dict, review: str | None) -> str:
        return "\n\n".join(
            [
                self.header(item, STAGE_FIX),
                item.get("description") or item["title"],
                "A reviewer asked for changes:\n" + (review or "")[-CONTEXT_CHARS:],
            ]
        )

    # -- the step ---------------------------------------------------------------------------

    def reconcile(self, item: dict) -> None:
        if item["status"] not in WORK_IN_FLIGHT_STATUSES:
            return
        stage = item.get("stage") or STAGE_WORK
        task = self.tasks.get(item.get("task_id") or "")
        if task is None:
            item["dispatches"] = int(item.get("dispatches") or 0) + 1
            if stage == STAGE_WORK:
                self.move(item, "requeue", ev.MISSION_WORK_REQUEUED, "its task is gone; again")
                item["task_id"] = None
            else:
                prompt = item.get("stage_prompt") or self.header(item, stage)
                self.queue(item, stage, prompt)
                self.plan.items[item["id"]] = item
            return
        if task.state in (_COMPLETED, _FAILED, _CANCELLED):
            self.charge(item, task)
        if task.state == _STARTED:
            self.move(item, "start", ev.MISSION_WORK_STARTED, "its task runs")
        elif task.state == _COMPLETED:
            self.finished(item, stage, task)
        elif task.state in (_FAILED, _CANCELLED):
            why = first_line(task.result) or f"its {stage} task was {task.state}"
            if task.state == _CANCELLED:
                why = f"its {stage} task was cancelled" + (f": {why}" if task.result else "")
            item["reason"] = why
            self.move(item, "fail", ev.MISSION_WORK_FAILED, f"failed: {why}")

    @staticmethod
    def charge(item: dict, task: TaskView) -> None:
        """Add a finished task's worker time and cost to its item (once: the item then moves on
        from that task)."""
        item["worker_secs"] = round((item.get("worker_secs") or 0) + (task.worker_secs or 0), 3)
        item["cost"] = round((item.get("cost") or 0) + (task.cost or 0), 6)

    def finished(self, item: dict, stage: str, task: TaskView) -> None:
        gated = self.policy.get("reviewer_required") and item["kind"] in REVIEWED_KINDS
        if stage in (STAGE_WORK, STAGE_FIX) and not gated:
            item["result"] = task.result
            self.move(item, "complete", ev.MISSION_WORK_COMPLETED, "done")
        elif stage in (STAGE_WORK, STAGE_FIX):
            if stage == STAGE_WORK:
                item["result"] = task.result
            item["round"] = int(item.get("round") or 0) + 1
            item["stage_prompt"] = self.review_prompt(item, task.result)
            self.queue(item, STAGE_REVIEW, item["stage_prompt"])
            item["artifact_refs"] = [*(item.get("artifact_refs") or []), f"task:{task.id}"]
            self.move(item, "await_review", ev.MISSION_WORK_BLOCKED, "waits for a review")
            self.plan.items[item["id"]] = item
        elif not review_rejects(task.result):
            item["reviewer_approved"] = True
            self.move(item, "complete", ev.MISSION_WORK_COMPLETED, "approved by review")
        elif int(item.get("round") or 0) >= int(self.policy.get("max_attempts") or 1):
            item["reason"] = f"review rejected it {item['round']} times: {first_line(task.result)}"
            self.move(item, "fail", ev.MISSION_WORK_FAILED, f"failed: {item['reason']}")
        else:
            item["stage_prompt"] = self.fix_prompt(item, task.result)
            self.queue(item, STAGE_FIX, item["stage_prompt"])
            item["reviewer_approved"] = False
            self.move(item, "await_review", ev.MISSION_WORK_BLOCKED, "changes requested")
            self.plan.items[item["id"]] = item

    def advance(self) -> None:
        done = WORK["complete"].target
        for item in self.items:
            if WORK["promote"].allows(item["status"]) and all(
                self.by_id.get(d, {}).get("status") == done for d in item.get("depends_on") or []
            ):
                self.move(item, "promote", ev.MISSION_WORK_PROMOTED, "ready")
        in_flight = sum(1 for i in self.items if i["status"] in WORK_IN_FLIGHT_STATUSES)
        slots = int(self.policy.get("max_parallel_items") or 1) - in_flight
        for item in self.items:
            if slots <= 0:
                break
            if WORK["queue"].allows(item["status"]):
                self.queue(item, STAGE_WORK, self.work_prompt(item), item.get("assign_to"))
                self.move(item, "queue", ev.MISSION_WORK_ASSIGNED, "its task is queued")
                slots -= 1
        failed = [i for i in self.items if i["status"] == WORK["fail"].target]
        if failed:
            self.end_mission("fail", f"work item {failed[0]['key']} failed: {failed[0]['reason']}")
        elif self.items and all(i["status"] == done for i in self.items):
            self.end_mission("complete", None)

    def help_reason(self, live_workers: int) -> str | None:
        after = int(self.policy.get("help_after_secs") or 0)
        if after <= 0:
            return None
        stale = [
            i
            for i in self.items
            if i["status"] in WORK_IN_FLIGHT_STATUSES
            and not self.being_worked_on(i)
            and (self.now - parse_rfc3339(i["progress_at"])).total_seconds() >= after
        ]
        if not stale:
            return None
        waiting = [i for i in stale if i["status"] == WORK["queue"].target]
        if waiting and live_workers == 0:
            return (
                f"{len(waiting)} work item(s) have waited {after} s or more and no worker is "
                "live: start workers (or a scaler)"
            )
        return f"work item {stale[0]['key']} has made no progress for {after} s or more"

    def being_worked_on(self, item: dict) -> bool:
        """Its task runs on a worker whose heartbeat is alive: progress however long it takes
        (a coding CLI may run for an hour; task_timeout_secs bounds one that hangs)."""
        task = self.tasks.get(item.get("task_id") or "")
        return task is not None and task.state == TASK_RUNNING and task.worker_alive

    def ask_for_help(self, live_workers: int) -> None:
        reason = self.help_reason(live_workers)
        m = self.mission
        if reason is None:
            if m.get("dispatcher_last_help_request_reason"):
                m.update(
                    dispatcher_last_help_request_reason=None, dispatcher_help_request_attempts=0
                )
                self.plan.mission = m
            return
        attempts = int(m.get("dispatcher_help_request_attempts") or 0)
        last = m.get("dispatcher_last_help_request_at")
        backoff = int(self.policy.get("help_after_secs") or 0) * min(2**attempts, HELP_BACKOFF_MAX)
        if (
            reason == m.get("dispatcher_last_help_request_reason")
            and last
            and (self.now - parse_rfc3339(last)).total_seconds() < backoff
        ):
            return
        m.update(
            dispatcher_last_help_request_at=self.ts,
            dispatcher_last_help_request_reason=reason,
            dispatcher_help_request_attempts=attempts + 1,
        )
        self.plan.mission = m
        self.plan.events.append(
            ev.event(
                ev.MISSION_HELP_NEEDED,
                f"mission {m['id']} needs help: {reason}",
                self.ts,
                mission_id=m["id"],
                reason=reason,
            )
        )


def plan(
    mission: dict,
    items: list[dict],
    tasks: dict[str, TaskView],
    *,
    now: datetime,
    ts: str,
    live_workers: int,
) -> Plan:
    """The next step for ``mission`` (see the module docstring). ``tasks``: the items' current
    tasks by id (a missing one has vanished); ``ts``: ``now`` as the documents' timestamp."""
    step = _Step(mission, items, tasks, now, ts)
    for item in step.items:
        step.reconcile(item)
    if step.mission.get("state") == MISSION["start"].target:
        step.advance()
    if step.plan.items:
        step.mission["dispatcher_last_progress_at"] = ts
        step.plan.mission = step.mission
    if step.mission.get("state") == MISSION["start"].target:
        step.ask_for_help(live_workers)
    return step.plan
