"""The one table of states: every state a task, an agent or a mission can be in, and every move
between them, by name. Nothing else spells a state name or a transition rule; code says which
move it makes (``TASK["complete"]``) and the store checks it atomically (Lua scripts get their
state lists from here, and a test holds them to it).

States are lowercase in Redis, capitalised in REST JSON (``"Idle"``) and lowercase in metric
labels (upstream's representations).

Tasks::

    pending ──assign──▶ assigned ──take──▶ running ──complete/fail──▶ completed / failed
       │  ◀────requeue────┘◀───────requeue──┘  │
       └──────────────── cancel ──────────────┴──▶ cancelled

Agents::

    starting ──ready──▶ idle ⇄ working ──▶ draining ──▶ stopped
                          paused ⇄ idle            (kill, recover: any active state → stopped)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Move:
    """A named transition: allowed only from ``source`` states; ``target`` None keeps the state
    (a change of fields that the record's state must allow)."""

    source: tuple[str, ...]
    target: str | None

    def allows(self, state: str) -> bool:
        return state in self.source

    def narrowed(self, expect: str | None) -> tuple[str, ...]:
        """The source states, or only ``expect`` if it is one of them (a compare-and-set on the
        state the caller saw); empty if it is not."""
        if expect is None:
            return self.source
        return (expect,) if expect in self.source else ()


@dataclass(frozen=True)
class Machine:
    kind: str  # "task", "agent", "mission"
    states: tuple[str, ...]
    moves: Mapping[str, Move]

    def __getitem__(self, name: str) -> Move:
        return self.moves[name]

    def check(self) -> None:
        """Every move names states of this machine (run by the tests)."""
        for name, move in self.moves.items():
            unknown = [
                s for s in (*move.source, move.target) if s is not None and s not in self.states
            ]
            if unknown:
                raise ValueError(f"{self.kind} move {name!r} names unknown states {unknown}")


def rest_state(state: str) -> str:
    """``"idle"`` → ``"Idle"`` (REST JSON form)."""
    return state.capitalize()


# --- tasks ---------------------------------------------------------------------------------------

TASK_STATES = ("pending", "assigned", "running", "completed", "failed", "cancelled")
TERMINAL_TASK_STATES = ("completed", "failed", "cancelled")
LIVE_TASK_STATES = ("pending", "assigned", "running")
TASK_REST_STATES = tuple(rest_state(s) for s in TASK_STATES)

# The state a worker's task is in while its CLI runs (a cancel nudges the worker; a claim that
# finds its task already in it for this agent leaves it, to be resumed).
TASK_RUNNING = "running"
# How a record is read (upstream's parsing rules): a missing or unknown state, and an alias.
TASK_DEFAULT_STATE = "pending"
TASK_STATE_ALIASES = {"in_flight": "running"}
# The backlog list holds exactly the tasks in this state (unassigned, waiting for any worker).
BACKLOG_STATE = "pending"

TASK = Machine(
    "task",
    TASK_STATES,
    {
        # a new task: for any worker (the backlog and the shared docket), or aimed at one agent
        "submit": Move((), "pending"),
        "submit_to_agent": Move((), "assigned"),
        # a pending backlog task aimed at one agent (claim, assign-all)
        "assign": Move(("pending",), "assigned"),
        # a worker takes the task of a docket entry: from the shared docket, or its own stream
        "take_shared": Move(("pending",), TASK_RUNNING),
        "take_directed": Move(("assigned",), TASK_RUNNING),
        # a held entry taken over from a dead holder, or resumed after a restart: a new attempt
        "take_over": Move(("pending", "assigned", "running"), "running"),
        # fields written while it runs (started_at, branch, commit)
        "record": Move(("running",), "running"),
        # fields written whatever the state, unless it is gone (a commit found after a report)
        "annotate": Move(TASK_STATES, None),
        "complete": Move(LIVE_TASK_STATES, "completed"),
        "fail": Move(LIVE_TASK_STATES, "failed"),
        "cancel": Move(LIVE_TASK_STATES, "cancelled"),
        # back to work with a fresh docket entry: unassigned on the shared docket, or to one agent
        "requeue": Move(("assigned", "running"), "pending"),
        "reassign": Move(("assigned", "running"), "assigned"),
        # a claim undone: the read's task goes straight back
        # (the worker was told to stop as it came)
        "undo_claim": Move(("running",), "pending"),
        # removing a task from the backlog (DELETE /v1/backlog/{id})
        "remove": Move(("pending",), None),
    },
)

# --- agents --------------------------------------------------------------------------------------

AGENT_STATES = ("cold", "starting", "idle", "working", "paused", "draining", "stopped", "error")
# A process is presumed to run (upstream's is_active); liveness is then judged by heartbeats.
ACTIVE_AGENT_STATES = ("starting", "idle", "working", "paused", "draining")
TERMINAL_AGENT_STATES = ("stopped", "error", "cold")
AGENT_REST_STATES = tuple(rest_state(s) for s in AGENT_STATES)
# A worker whose agent is in one of these takes no new work: a read delivers, the claim refuses,
# and the entries go back for other workers; it stops (STOP) or waits (paused).
AGENT_STOP_STATES = ("stopped", "draining", "error", "cold")
AGENT_NO_WORK_STATES = (*AGENT_STOP_STATES, "paused")
PRUNABLE_AGENT_STATES = ("stopped", "error")  # what POST /v1/agents/prune deletes (without all)
AGENT_BUSY_STATES = ("starting", "working")  # taking or doing work: a scaler never drains it
AGENT_IDLE_STATE = "idle"  # waiting for work: what a scaler may drain
AGENT_WORKING_STATE = "working"  # its CLI runs: what /api/scaling counts as busy
AGENT_ERROR_STATE = "error"
AGENT_COLD_STATE = "cold"  # upstream's; counted apart in the scaling signal, never set here

AGENT_DEFAULT_STATE = "starting"  # a record without a (known) state, as upstream reads it

AGENT = Machine(
    "agent",
    AGENT_STATES,
    {
        "register": Move(
            AGENT_STATES, "starting"
        ),  # a new record, or one adopted by TINYTOWN_AGENT_ID
        "ready": Move(("starting",), "idle"),
        # (not from paused: a pause that lands between a claim and its CLI's start holds; the
        # CLI runs its task, and the agent takes no new work until resumed)
        "work": Move(("idle", "starting", "working"), "working"),
        "rest": Move(("working",), "idle"),
        "drain": Move(("starting", "idle", "working", "paused"), "draining"),
        "drain_task": Move(("working",), "draining"),  # told to stop while its CLI runs
        "pause": Move(("starting", "idle", "working"), "paused"),  # an operator's interrupt
        "resume": Move(("paused",), "idle"),
        "resume_work": Move(("paused",), "working"),  # a pause lifted while its CLI still runs
        "stop": Move(ACTIVE_AGENT_STATES, "stopped"),  # its worker leaves
        "recover": Move(ACTIVE_AGENT_STATES, "stopped"),  # dead: no heartbeat within its window
        "kill": Move(AGENT_STATES, "stopped"),  # POST /v1/agents/{agent}/kill
        # POST /v1/agents/{agent}/restart: not while its CLI runs a task (idle would let a scaler
        # remove the worker, and the round's end could not move it back)
        "restart": Move(("cold", "starting", "idle", "paused", "stopped", "error"), "idle"),
        "beat": Move(AGENT_STATES, None),  # a heartbeat, counters, current task: fields only
    },
)

# --- missions ------------------------------------------------------------------------------------

MISSION_STATES = ("planning", "running", "blocked", "completed", "failed")
TERMINAL_MISSION_STATES = ("completed", "failed")
LIVE_MISSION_STATES = ("planning", "running", "blocked")
MISSION_DEFAULT_STATE = "planning"

MISSION = Machine(
    "mission",
    MISSION_STATES,
    {
        "start": Move(("planning",), "running"),
        "stop": Move(LIVE_MISSION_STATES, "blocked"),
        "stop_forced": Move(LIVE_MISSION_STATES, "failed"),
        "resume": Move(LIVE_MISSION_STATES, "running"),
        "complete": Move(("planning", "running", "blocked", "completed"), "completed"),
        "fail": Move(("planning", "running", "blocked", "failed"), "failed"),
        # a note says pause or hold: the dispatcher queues nothing until it is resumed
        "pause": Move(("running",), "blocked"),
        # a note says retry (or resume) a mission that failed or was stopped: its failed items
        # get their attempts again
        "retry": Move(("blocked", "failed"), "running"),
    },
)

# A work item (upstream §5.3, plus ``failed``: its task failed after its attempts, or its review
# was rejected past them). ``blocked``: its work is done and waits for a review or a fix.
WORK_STATUSES = ("pending", "ready", "assigned", "running", "blocked", "done", "failed")
WORK_DEFAULT_STATUS = "pending"
LIVE_WORK_STATUSES = ("pending", "ready", "assigned", "running", "blocked")
# Items whose task is queued or running: what ``max_parallel_items`` counts.
WORK_IN_FLIGHT_STATUSES = ("assigned", "running", "blocked")

WORK = Machine(
    "work item",
    WORK_STATUSES,
    {
        "promote": Move(("pending",), "ready"),  # every dependency is done
        "queue": Move(("ready",), "assigned"),  # its task is on the docket
        "start": Move(("assigned",), "running"),  # a worker runs its task
        "await_review": Move(WORK_IN_FLIGHT_STATUSES, "blocked"),  # a review or fix task queued
        "complete": Move(WORK_IN_FLIGHT_STATUSES, "done"),
        "fail": Move(LIVE_WORK_STATUSES, "failed"),
        "requeue": Move(WORK_IN_FLIGHT_STATUSES, "ready"),  # its task vanished: a new one
        "retry": Move(("failed",), "pending"),  # a retry note: attempts again
    },
)

MACHINES = (TASK, AGENT, MISSION, WORK)
