"""Recovering work from dead agents: ``tt recover``, ``tt reclaim`` and their REST routes.

- :func:`recover` marks agents with a stale heartbeat ``stopped`` and returns every docket entry
  a dead agent still holds to work (its task back to the backlog, or failed past
  ``max_attempts``).
- :func:`reclaim` moves the inbox messages and directed tasks of terminal agents to the backlog
  or to another agent. It never discards a message: with no destination it only lists, and a
  message that cannot go where asked stays where it is.
- :func:`orphan_tasks` finds live tasks assigned to an agent that is gone or terminal.
- :func:`recover_silent_workers` is the part idle workers run on their own: directed tasks a
  dead agent holds go back to the backlog.

"Dead" is judged by heartbeats (``DEAD_AFTER_HEARTBEATS`` missed intervals), never by files on
the caller's disk. These are operator actions, not hot paths: they read the agent index.
"""

from __future__ import annotations

from tinytown.core import messages as inbox
from tinytown.core.clock import now, to_rfc3339
from tinytown.core.errors import InvalidTransition
from tinytown.core.records import Agent
from tinytown.core.states import (
    AGENT_STOP_STATES,
    BACKLOG_STATE,
    LIVE_TASK_STATES,
    TASK,
    TASK_RUNNING,
)
from tinytown.store import Town
from tinytown.store.dockets import is_dead

ORPHAN_ACTIONS = ("list", "to_backlog", "backlog", "cancel", "delete")
_HELD_ENTRIES_PER_PASS = 1000


def return_held_entries(town: Town, stream: str, holder: str, *, min_idle_ms: int = 0) -> int:
    """Give back every entry ``holder`` holds on ``stream`` (idle at least ``min_idle_ms``).

    Returns how many tasks went back.
    Each task goes back to the backlog with a fresh shared-docket entry (or is failed when it
    used up ``max_attempts``), then the old entry is acknowledged — in that order, so a crash in
    between leaves a duplicate entry, never a lost task. A shared-docket entry whose task is
    still ``pending`` (the holder read it but never took it: it died before putting it back)
    goes back as it is, a copy added and the original acknowledged in one step. An entry is
    acknowledged or put back only while ``holder`` still holds it: an idle worker may take it
    over between the listing and the acknowledgement, and its run must keep its entry.
    """
    returned = 0
    for entry_id, _idle in town.dockets.held(
        stream, holder, min_idle_ms=min_idle_ms, count=_HELD_ENTRIES_PER_PASS
    ):
        task_id = town.dockets.task_of(stream, entry_id)
        task = town.tasks.find(task_id) if task_id else None
        if task is not None and task.state == BACKLOG_STATE and stream == town.keys.docket:
            if town.dockets.release(stream, entry_id, holder):
                returned += 1
            continue
        if task is not None and not task.terminal:
            max_attempts = task.attempts_allowed(town.config.agent.max_attempts)
            owned = task.state == BACKLOG_STATE or task.assigned_to == holder
            if owned and task.state == TASK_RUNNING and task.attempts >= max_attempts:
                reason = (
                    f"failed after {task.attempts} attempts (max_attempts = {max_attempts}); "
                    f"the last one ended when worker {holder} stopped without finishing it"
                )
                if town.tasks.transition(
                    task.id,
                    "fail",
                    expect=TASK_RUNNING,
                    assignee=holder,
                    set_fields={"result": reason, "completed_at": to_rfc3339(now())},
                ).ok:
                    returned += 1
            elif owned:
                assignee = "" if task.state == BACKLOG_STATE else holder
                if town.tasks.requeue(task.id, expect=task.state, assignee=assignee).ok:
                    returned += 1
        town.dockets.ack(stream, entry_id, holder)  # (not if another worker took it over)
    return returned


def recover(town: Town, *, sweep_terminal: bool = True) -> dict:
    """Stop agents whose heartbeat window has passed and return the work every dead agent holds.

    Dead agents come from the index (O(dead agents)); ``sweep_terminal`` also reads every agent
    for terminal ones that left a directed entry behind (a drain timeout) — what ``tt recover``
    and ``POST /v1/recover`` do; townhall's keeper, which runs this by itself, skips that part.

    Nobody is judged while Redis has just started (``AgentStore.settled``): after a restart
    every live agent's window may have run out while it could not beat, and taking their
    entries then would run their tasks twice.

    Returns ``{"checked": n, "recovered": n, "agents": [names], "reclaimed": n}``: agents in an
    active state examined, agents marked stopped, their names, and tasks returned to work (or
    failed past ``max_attempts``).
    """
    now_ms = town.agents.now_ms()
    checked = town.agents.active_count()
    stopped: list[Agent] = []
    if not town.agents.settled():  # Redis has just started: every window may have run out
        return {"checked": checked, "recovered": 0, "agents": [], "reclaimed": 0}
    deaths = town.agents.deaths(now_ms)
    for agent in deaths.active:
        result = town.agents.update(agent.id, "recover")
        if result.ok:
            age = "never" if not agent.last_heartbeat else agent.last_heartbeat
            town.agents.log_activity(
                agent.id, f"recovered: no heartbeat since {age}; marked stopped"
            )
            stopped.append(agent)

    reclaimed = 0
    for holder in town.dockets.holders(town.keys.docket):
        agent = town.agents.find(holder)
        if is_dead(agent, now_ms) and not still_finishing(town, agent, now_ms):
            reclaimed += return_held_entries(town, town.keys.docket, holder)
            town.dockets.forget(town.keys.docket, holder)  # dead consumers leave the group
    for agent in stopped:
        reclaimed += return_held_entries(town, town.keys.agent_docket(agent.id), agent.id)
    reclaimed += return_left_work(town, deaths.left_work)
    if sweep_terminal:
        for agent in town.agents.all():  # terminal agents that left entries behind (drain timeout)
            if not agent.active and agent.current_task and not still_finishing(town, agent, now_ms):
                reclaimed += return_held_entries(town, town.keys.agent_docket(agent.id), agent.id)
                town.agents.update(agent.id, delete_fields=("current_task",))
    return {
        "checked": checked,
        "recovered": len(stopped),
        "agents": [a.name for a in stopped],
        "reclaimed": reclaimed,
    }


def return_left_work(town: Town, agents: list[Agent]) -> int:
    """Agents stopped from outside (``POST /v1/agents/{agent}/kill``) whose worker died with a
    task still recorded: the directed entries they hold go back to the backlog (nobody else
    reads their streams; their shared entries are the holders' loop's), and the task is no
    longer recorded on them, which takes them out of the deadlines index."""
    returned = 0
    for agent in agents:  # (past their window: none is still finishing)
        returned += return_held_entries(town, town.keys.agent_docket(agent.id), agent.id)
        town.agents.update(agent.id, delete_fields=("current_task", "cli_pgid"))
    return returned


def still_finishing(town: Town, agent: Agent | None, now_ms: int) -> bool:
    """Stopped from outside (``POST /v1/agents/{agent}/kill``) while its worker still runs a task:
    the heartbeat is fresh and the stop request is not taken up yet (the worker takes it, and
    exits, once the task ends). Its entries stay with it, so the task does not run twice."""
    if agent is None or agent.active or agent.alive_until <= now_ms:
        return False
    return town.agents.stop_requested(agent.id)


def in_use(agent: Agent, now_ms: int) -> bool:
    """Its worker may still run a task: one is recorded and the heartbeat window is open (a
    working agent, a paused or draining one, or one stopped from outside whose worker finishes
    its task). Deleting its record then would let the task run twice."""
    return bool(agent.current_task) and agent.alive_until > now_ms


def keeps_entries_fresh(town: Town, agent_id: str) -> bool:
    """A worker still keeps an entry of this agent's fresh (idle less than
    ``claim_timeout_secs``: a live worker refreshes its entries while its CLI runs), whatever
    the agent's record says — stopped, or deleted by a prune. Two XPENDINGs."""
    max_idle_ms = town.config.agent.claim_timeout_secs * 1000
    for stream in (town.keys.docket, town.keys.agent_docket(agent_id)):
        if any(idle < max_idle_ms for _, idle in town.dockets.held(stream, agent_id, count=10)):
            return True
    return False


def recover_silent_workers(town: Town) -> int:
    """What idle workers run every ``claim_timeout_secs``: return the directed tasks that
    live-state agents with a stale heartbeat hold on their own streams (no other worker reads
    those), once idle longer than ``claim_timeout_secs``, and those of agents stopped from
    outside whose worker died with a task recorded (:func:`return_left_work`). Their
    shared-docket entries are taken over by :meth:`Docket.reclaim_one`. Agent states are left
    to ``tt recover`` (a worker never stops another). Reads only the deadlines index. Returns
    how many tasks went back.
    """
    min_idle_ms = town.config.agent.claim_timeout_secs * 1000
    now_ms = town.agents.now_ms()
    deaths = town.agents.deaths(now_ms)
    returned = 0
    for agent in deaths.active:
        returned += return_held_entries(
            town, town.keys.agent_docket(agent.id), agent.id, min_idle_ms=min_idle_ms
        )
    return returned + return_left_work(town, deaths.left_work)


# -- reclaim: inbox messages and directed tasks of terminal agents ----------------------------


def _directed_tasks(town: Town, agent_ids: set[str]) -> list:
    """Live tasks (assigned or running) whose assignee is one of ``agent_ids``."""
    out = []
    for state in TASK["reassign"].source:  # the live states of a task aimed at an agent
        out += [
            t
            for t in town.tasks.many(town.tasks.ids_in_state(state))
            if t is not None and t.assigned_to in agent_ids
        ]
    return out


def reclaim(
    town: Town,
    *,
    to_backlog: bool = False,
    to_agent: str | None = None,
    from_agent: str | None = None,
) -> dict:
    """Move the work of terminal agents (or of ``from_agent``) to the backlog or another agent.

    Directed tasks (``assigned``/``running`` to the agent) go back to the backlog or are
    re-assigned to ``to_agent`` — except a task still running on a worker whose agent was
    stopped from outside (:func:`still_finishing`), which stays with it (``kept``). Inbox
    messages move to ``to_agent``; with ``to_backlog`` a ``task`` message becomes a backlog task
    and a ``task_assign`` message requeues its task, while other messages stay in the inbox (a
    backlog holds tasks, not conversation). With neither destination nothing moves: everything
    is listed. ``to_agent`` stopped, draining or in error is refused (InvalidTransition): what
    moved there would wait until somebody restarted it.

    Returns ``{"reclaimed": n, "destination": "Backlog" | 'Agent("<name>")' | "Listed",
    "messages": [{"agent", "kind", "id", "type", "summary", "outcome"}]}`` where ``reclaimed``
    counts what moved (what would move, when listing).
    """
    if to_backlog and to_agent:
        raise ValueError("choose one destination: to_backlog or to_agent, not both")
    target = town.agents.resolve(to_agent) if to_agent else None
    if target is not None and target.state in AGENT_STOP_STATES:  # its work would wait for ever
        raise InvalidTransition(
            "agent",
            target.name,
            target.state,
            "given work (restart it first, or reclaim to the backlog)",
        )
    if from_agent:
        source = town.agents.resolve(from_agent)
        if source.active:
            raise InvalidTransition(
                "agent", source.name, source.state, "reclaimed from while it runs (stop it first)"
            )
        sources = [source]
    else:
        sources = [a for a in town.agents.all() if not a.active]
    sources = [a for a in sources if target is None or a.id != target.id]
    destination = "Backlog" if to_backlog else f'Agent("{target.name}")' if target else "Listed"
    names = {a.id: a.name for a in sources}
    items: list[dict] = []

    now_ms = town.agents.now_ms()
    finishing = {a.id for a in sources if still_finishing(town, a, now_ms)}
    for task in _directed_tasks(town, set(names)):
        item = {
            "agent": names[task.assigned_to],
            "kind": "task",
            "id": task.id,
            "type": "task",
            "summary": task.description,
            "outcome": "listed",
        }
        if (
            task.state == TASK_RUNNING and task.assigned_to in finishing
        ):  # killed, but its worker still runs it
            item["outcome"] = "kept" if to_backlog or target else "listed"
        elif to_backlog or target:
            moved = town.tasks.requeue(
                task.id,
                expect=task.state,
                assignee=task.assigned_to,
                to_agent=target.id if target else None,
            ).ok
            item["outcome"] = ("moved" if target else "to_backlog") if moved else "kept"
        items.append(item)

    for agent in sources:
        urgent_list, _ = town.inbox.lists(agent.id)
        for list_key, raw in town.inbox.raw(agent.id):
            message = inbox.decode(raw)
            kind, summary = inbox.summarize(message)
            item = {
                "agent": agent.name,
                "kind": "message",
                "id": message.get("id", ""),
                "type": kind,
                "summary": summary,
                "outcome": "listed",
            }
            if target:
                moved = town.inbox.move(list_key, raw, target.id, urgent=list_key == urgent_list)
                item["outcome"] = "moved" if moved else "kept"
            elif to_backlog:
                item["outcome"] = _message_to_backlog(town, agent, list_key, raw, message)
            items.append(item)

    if to_backlog or target:
        reclaimed = sum(1 for i in items if i["outcome"] in ("moved", "to_backlog"))
    else:
        reclaimed = len(items)
    return {"reclaimed": reclaimed, "destination": destination, "messages": items}


def _message_to_backlog(town: Town, agent: Agent, list_key: str, raw: str, message: dict) -> str:
    """A ``task`` message becomes a backlog task; a ``task_assign`` requeues its task; others
    stay."""
    kind = message.get("type")
    if kind == "task" and message.get("description"):
        # Remove first: if the message is already gone someone else moved it; never duplicate.
        if not town.inbox.remove(list_key, raw):
            return "kept"
        town.tasks.add(str(message["description"]), tags=["reclaimed"])
        return "to_backlog"
    if kind == "task_assign" and message.get("task_id"):
        task = town.tasks.find(str(message["task_id"]))
        if task is None or task.terminal:
            return "kept"
        if task.state != BACKLOG_STATE:
            if not town.tasks.requeue(
                task.id, expect=task.state, assignee=task.assigned_to or ""
            ).ok:
                return "kept"
        town.inbox.remove(list_key, raw)
        return "to_backlog"
    return "kept"


# -- orphan tasks ------------------------------------------------------------------------------


def orphan_tasks(town: Town, action: str = "list") -> dict:
    """Live tasks assigned to an agent that is missing or terminal, and what to do with them
    (a task still running on a worker whose agent was stopped from outside, or deleted, is not
    an orphan: :func:`in_use`, :func:`keeps_entries_fresh`).

    ``action``: ``list`` (default), ``to_backlog``/``backlog`` (requeue: pending, unassigned,
    fresh shared-docket entry), ``cancel`` (with the reason) or ``delete``. Raises ValueError for
    any other action. Returns ``{"action", "count", "orphans": [{"task_id", "assigned_to",
    "state", "reason": "agent_missing" | "agent_terminal"}]}``.
    """
    if action not in ORPHAN_ACTIONS:
        raise ValueError(f"unknown action {action!r}; expected one of {', '.join(ORPHAN_ACTIONS)}")
    orphans = []
    now_ms = town.agents.now_ms()
    verdicts: dict[
        str, tuple[str | None, bool]
    ] = {}  # assignee → (reason, its worker still finishing)
    for state in LIVE_TASK_STATES:
        for task in town.tasks.many(town.tasks.ids_in_state(state)):
            if task is None or not task.assigned_to:
                continue
            if task.assigned_to not in verdicts:
                agent = town.agents.find(task.assigned_to)
                reason = (
                    "agent_missing" if agent is None else None if agent.active else "agent_terminal"
                )
                finishing = reason is not None and (
                    (
                        agent is not None
                        and (in_use(agent, now_ms) or still_finishing(town, agent, now_ms))
                    )
                    or keeps_entries_fresh(town, task.assigned_to)
                )
                verdicts[task.assigned_to] = (reason, finishing)
            reason, finishing = verdicts[task.assigned_to]
            if reason and not (
                finishing and task.state == TASK_RUNNING
            ):  # a killed agent's worker still runs it
                orphans.append(
                    {
                        "task_id": task.id,
                        "assigned_to": task.assigned_to,
                        "state": task.state,
                        "reason": reason,
                    }
                )
    for o in orphans:
        if action in ("to_backlog", "backlog"):
            town.tasks.requeue(o["task_id"], expect=o["state"], assignee=o["assigned_to"])
        elif action == "cancel":
            why = (
                "assignee no longer exists"
                if o["reason"] == "agent_missing"
                else "assignee is in a terminal state"
            )
            town.tasks.transition(
                o["task_id"],
                "cancel",
                expect=o["state"],
                assignee=o["assigned_to"],
                set_fields={"result": f"Cancelled: {why}", "completed_at": to_rfc3339(now())},
            )
        elif action == "delete":
            town.tasks.delete(o["task_id"])
    return {"action": action, "count": len(orphans), "orphans": orphans}
