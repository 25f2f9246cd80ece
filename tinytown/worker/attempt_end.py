"""The end of an attempt, once its CLI has exited: what it left in its workspace committed (and
pushed when asked), the task's final state written unless the task moved on meanwhile, and the
round ended: the docket entry acknowledged, the round counted and the agent back to ``idle``.

Most tasks end in one round trip (the final write carries the round's end); a task with a
workspace, or one whose attempt is retried, ends its round in a second (``round_done``). Both are
guarded so that a retry after a lost reply counts nothing twice. :class:`AttemptEnd` is a part of
:class:`~tinytown.worker.task_run.TaskRunner`, which sets the state it reads.
"""

from __future__ import annotations

import functools

from tinytown.core.clock import now, to_rfc3339
from tinytown.core.errors import TinytownError
from tinytown.core.records import Task
from tinytown.core.states import AGENT, TASK_RUNNING, TERMINAL_TASK_STATES
from tinytown.store.docket import Entry
from tinytown.store.worker import RoundEnd
from tinytown.worker import workspace
from tinytown.worker.outcome import Outcome
from tinytown.worker.output_stream import OutputStream
from tinytown.worker.workspace import Workspace


class AttemptEnd:
    worker: object  # the worker (task_run.WorkerState)
    output: OutputStream | None  # the attempt's output stream
    finishing: OutputStream | None  # an output to mark finished with the round's end
    token: str | None  # the attempt's task token, revoked with the final write
    round_ended: tuple[str, str] | None  # the agent's move, when the final write ended the round

    def commit_workspace(self, task: Task, ws: Workspace | None, outcome: Outcome) -> dict:
        """Commit what the CLI left (push when asked); the fields to record on the task."""
        if ws is None:
            return {}
        w = self.worker
        try:
            head = workspace.commit(ws, task, agent_name=w.name, push=task.push)
            w.log(
                "workspace_committed",
                task=task.id,
                branch=ws.branch,
                commit=head,
                pushed=task.push,
            )
            return {"branch": ws.branch, "commit": head}
        except TinytownError as err:
            outcome.error = outcome.error or f"workspace: {err}"
            w.log("workspace_failed", task=task.id, detail=str(err))
            return {"branch": ws.branch}
        finally:
            ws.close()

    def write_final_state(
        self, entry: Entry, task: Task, outcome: Outcome, fields: dict[str, str]
    ) -> str:
        """The task's final state for this attempt (``Outcome.verdict``), written unless the task
        moved on meanwhile; returns it: ``completed``, ``failed``, ``retry`` or ``kept:<state>``
        (the CLI reported through tt/REST, or the task was cancelled or taken over). ``fields``
        (the workspace's branch and commit) are recorded either way while the task is ours."""
        w, tasks, me = self.worker, self.worker.town.tasks, self.worker.agent_id
        final, text = outcome.verdict(task.attempts, w.config, task.max_attempts)
        charge = outcome.charge(task, w.cost_per_hour)
        token, self.token = self.token, None  # revoked with the final write (one round trip)
        output = self.output if self.output is not None and self.output.task_id == task.id else None
        last = output.rest if output is not None else None  # the output's last part, still unsent
        ended = functools.partial(
            w.store.attempt_ended, task.id, token=token, run_secs=outcome.run_secs, output=last
        )
        if final == "retry":
            if token or outcome.run_secs or last:
                _, output_error, _ = w.with_redis("attempt_ended", ended)
                if output_error is not None:
                    output.failed(output_error)
            to = me if entry.directed else None
            result = w.with_redis(
                "requeue",
                tasks.requeue,
                task.id,
                expect=TASK_RUNNING,
                assignee=me,
                to_agent=to,
                set_fields=charge,
            )
        else:
            move = "complete" if final == "completed" else "fail"
            ts = to_rfc3339(now())
            ended_fields = {"result": text, "completed_at": ts, **charge, **fields}
            # No workspace fields to record afterwards: the round ends in this round trip too.
            end = None if fields else RoundEnd(entry, output.task_id if output else None, ts)
            result, output_error, round_end = w.with_redis(
                move, ended, move=move, set_fields=ended_fields, round_end=end
            )
            if output_error is not None:
                output.failed(output_error)
            if round_end is not None:
                state, self.round_ended = round_end
                self.output = None
                return final if result.ok else f"kept:{state or 'missing'}"
        if result.ok:
            self.output_finished(task, final)
            return final
        current = w.with_redis("reread", tasks.find, task.id)
        if fields and current is not None and current.assigned_to == me:
            w.with_redis(
                "record_commit",
                tasks.transition,
                task.id,
                "annotate",
                expect=current.state,
                assignee=me,
                set_fields=fields,
            )
        self.output_finished(task, current.state if current else "")
        return f"kept:{current.state if current else 'missing'}"

    def output_finished(self, task: Task, state: str) -> None:
        """Once the task is in a final state, its output stream is to be marked finished: with
        the worker's next writes (``finishing``, ``agent_worker.Worker.finish``)."""
        if self.output is not None and self.output.task_id == task.id:
            if state in TERMINAL_TASK_STATES:
                self.finishing = self.output
            self.output = None

    def end_round(self, entry: Entry) -> None:
        """Once the final state is written, one round trip: the output marked finished (if the
        task is in a final state), the entry acknowledged and the round counted (only while it
        is held: a retry after a lost reply counts nothing twice), the agent ``idle`` (one
        paused, stopping or stopped meanwhile stays so: the move leaves only from its source
        states)."""
        w = self.worker
        if self.round_ended is not None:  # ended with the final write (write_final_state)
            (status, old), self.round_ended = self.round_ended, None
            self.rested(status, old)
            return
        output, self.finishing = self.finishing, None
        state, (status, old) = w.with_redis(
            "round_done",
            w.store.round_done,
            entry,
            last_active_at=to_rfc3339(now()),
            output_of=output.task_id if output is not None else None,
        )
        if state == "unfinished":  # (not expected: its entry stays held for a take-over)
            w.log("round_not_ended", task=entry.task_id, reason="task still running")
        self.rested(status, old)

    def rested(self, status: str, old: str) -> None:
        """After the round's ``rest`` move: logged if it moved; an agent paused meanwhile stays
        paused, and its record stops naming the task and the CLI that ended (one more write)."""
        w, idle = self.worker, AGENT["rest"].target
        if status == "ok" and old != idle:
            w.log("agent_state", state=idle, previous=old, reason=None)
        elif status == "state" and old == AGENT["pause"].target:
            w.with_redis(
                "round_done_paused",
                w.town.agents.update,
                w.agent_id,
                "beat",
                set_fields={"last_active_at": to_rfc3339(now())},
                delete_fields=("current_task", "cli_pgid"),
            )
