"""Write routes (scope ``town.write``): tasks, backlog, messages, mission records.

Each view reads its body and runs its operation (:mod:`tinytown.ops`) with the path's values.
"""

from __future__ import annotations

from flask import Blueprint

from tinytown.api.access import protect
from tinytown.api.common import run
from tinytown.api.validation import json_body

write = Blueprint("write", __name__)
protect(write, "town.write")


@write.post("/v1/tasks/assign")
def assign_task():
    return run("task.assign", json_body())


@write.post("/v1/backlog")
def add_backlog():
    return run("backlog.add", json_body())


@write.post("/v1/backlog/<task_id>/claim")
def claim(task_id: str):
    return run("backlog.claim", json_body(), task_id=task_id)


@write.post("/v1/backlog/assign-all")
def assign_all():
    return run("backlog.assign_all", json_body())


@write.delete("/v1/backlog/<task_id>")
def remove_backlog(task_id: str):
    return run("backlog.remove", task_id=task_id)


@write.post("/v1/tasks/<task_id>/complete")
def complete_task(task_id: str):
    """A coding CLI (or anyone) reports success; ``agent`` optionally guards the assignee."""
    return run("task.complete", json_body(optional=True), task_id=task_id)


@write.post("/v1/tasks/<task_id>/fail")
def fail_task(task_id: str):
    return run("task.fail", json_body(optional=True), task_id=task_id)


@write.post("/v1/tasks/<task_id>/cancel")
def cancel_task(task_id: str):
    """Stop a task for good; a worker running it is nudged and stops its CLI at once."""
    return run("task.cancel", json_body(optional=True), task_id=task_id)


@write.post("/v1/messages/send")
def send_message():
    return run("message.send", json_body())


# -- mission records --------------------------------------------------------------------------


@write.post("/v1/missions")
def start_mission():
    """A mission of work items and/or upstream's objectives (issue and document references,
    compiled through ``gh`` on townhall's machine when it is installed)."""
    return run("mission.start", json_body())


@write.patch("/v1/missions/<mission_id>/work/<work_item_id>")
def update_work_item(mission_id: str, work_item_id: str):
    return run(
        "mission.update_work_item", json_body(), mission_id=mission_id, work_item_id=work_item_id
    )


@write.post("/v1/missions/<mission_id>/watches/<watch_id>/snooze")
def snooze_watch(mission_id: str, watch_id: str):
    return run("mission.snooze_watch", json_body(), mission_id=mission_id, watch_id=watch_id)
