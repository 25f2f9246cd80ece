"""What a chaos run (``bench/chaos_town.py``) cost, counted from Redis and the processes' logs.

- **lost**: a task Redis acknowledged that is gone or never reached a final state;
- **duplicate runs**: starts of the stand-in CLI per task beyond the first (its run log);
  *unexplained* ones are starts, other than a task's last, by an agent that was never killed;
- **kills mid-task**: killed workers whose own log shows a task started and not finished;
- **unexpected exits**: workers that ended without being killed (the supervisor restarted them);
- for the Redis-restart variant, ``/ready`` around the outage and the workers that reconnected.

``problems`` lists, in words, every way the run fell short of the guarantees; a task involved in
one gets its record, CLI starts, worker log lines and events under ``anomalies``.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from pathlib import Path

from tinytown.core import events as ev
from tinytown.store import Town

ANOMALIES_SHOWN = 10
LINES_SHOWN = 20
RESULT_CHARS = 300
_RECLAIMED = re.compile(r"event=agents_recovered .*recovered=(\d+) reclaimed=(\d+)")


def read_starts(runs_log: Path) -> dict[str, list[tuple[str, str]]]:
    """Task id → its CLI starts in order: (attempt, agent id)."""
    starts: dict[str, list[tuple[str, str]]] = defaultdict(list)
    if runs_log.exists():
        for line in runs_log.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3:
                starts[parts[0]].append((parts[1], parts[2]))
    return starts


def starts_by_agent(runs_log: Path) -> dict[str, list[str]]:
    """Agent id → the tasks its CLIs started, in order (the CLIs append in time order)."""
    out: dict[str, list[str]] = defaultdict(list)
    if runs_log.exists():
        for line in runs_log.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3:
                out[parts[2]].append(parts[0])
    return out


def keeper_recoveries(townhall_log: Path) -> dict[str, int]:
    """What townhall's keeper logged: passes that recovered, agents stopped, tasks returned."""
    found = _RECLAIMED.findall(townhall_log.read_text(errors="replace"))
    return {
        "passes": len(found),
        "agents": sum(int(a) for a, _ in found),
        "tasks": sum(int(t) for _, t in found),
    }


def ready_report(run) -> dict:
    """``/ready`` around the Redis outage: 503 seen while it was down, 200 again after."""
    times = run.redis_timeline
    down, up = times.get("down_at"), times.get("up_at")
    report = {"timeline": dict(times), "ready_changes": [list(c) for c in run.ready]}
    if down is None or up is None:
        return report
    not_ready = next((t for t, c in run.ready if t >= down and c == 503), None)
    after = [(t, c) for t, c in run.ready if not_ready is not None and t > not_ready]
    back = next((t for t, c in after if c == 200), None)
    report.update(
        ready_503_after_secs=None if not_ready is None else round(not_ready - down, 2),
        # (up_at is taken when the server answered; the probe may have seen it a poll earlier)
        ready_200_after_up_secs=None if back is None else round(max(0.0, back - up), 2),
        workers_reconnected=sum(
            1
            for inc in run.gone + run.slots
            if any(e["event"] == "redis_reconnected" for e in inc.events())
        ),
    )
    return report


def tally(run, town: Town, wall_secs: float | None) -> dict:
    chaos = run.chaos
    found = dict(zip(run.ids, town.tasks.many(run.ids)))
    acked = set(run.submitted)
    states = Counter(t.state if t else "missing" for t in found.values())
    lost = [i for i in run.submitted if found[i] is None or not found[i].terminal]
    failed = [i for i in run.submitted if found[i] is not None and found[i].state == "failed"]
    starts = read_starts(run.runs_log)
    incarnations = run.gone + run.slots
    killed = [inc for inc in incarnations if inc.killed_at is not None]
    # A re-run is explained by a kill when the run before it was the killed worker's, with the
    # task still held when it died.
    by_agent = starts_by_agent(run.runs_log)
    killed_holding = {
        (inc.agent_id(), inc.task_held_at_death(by_agent.get(inc.agent_id() or "", [])))
        for inc in killed
    }
    duplicates = sum(len(s) - 1 for s in starts.values())
    unexplained = [
        task
        for task, s in starts.items()
        if any((agent, task) not in killed_holding for _, agent in s[:-1])
    ]
    unexpected = [inc for inc in run.gone if inc.killed_at is None]
    completed = states["completed"]
    summary = {
        "tasks": chaos.tasks,
        "submitted": len(acked),
        "completed": completed,
        "lost": len(lost),
        "failed": len(failed),
        "kills": run.kills,
        "duplicate_runs": duplicates,
        "wall_secs": wall_secs,
        "throughput_per_sec": round(completed / wall_secs, 1) if wall_secs else None,
        "kills_mid_task": sum(1 for inc in killed if inc.task_held_at_death()),
        "duplicates_unexplained": len(unexplained),
        "tasks_run_more_than_once": sum(1 for s in starts.values() if len(s) > 1),
        "extra_attempts": sum(t.attempts - 1 for t in found.values() if t and t.attempts > 1),
        "restarts": len(run.gone),
        "unexpected_exits": [
            {"worker": inc.name, "code": inc.exit_code, "last": last_line(inc.log)}
            for inc in unexpected
        ],
        "submit_errors": run.submit_errors,
        "keeper": keeper_recoveries(run.townhall.log_path),
        "states": dict(states),
        "settings": {
            "workers": chaos.workers,
            "task_secs": chaos.task_secs,
            "kill_every_secs": list(chaos.kill_every_secs),
            "restart_as": chaos.restart_as,
            "backlog": chaos.backlog,
            "seed": chaos.seed,
        },
    }
    if chaos.redis_restart:
        summary["redis_restart"] = {
            "how": "SHUTDOWN (AOF appendfsync everysec, fsynced on shutdown), started again",
            "down_secs": chaos.redis_down_secs,
            **ready_report(run),
        }
    summary["problems"] = problems(summary, wall_secs, lost, failed, unexplained)
    involved = (lost + failed + unexplained)[:ANOMALIES_SHOWN]
    summary["anomalies"] = [anomaly(run, town, task, found, starts) for task in involved]
    return summary


def problems(summary: dict, wall_secs, lost, failed, unexplained) -> list[str]:
    out = []
    if wall_secs is None:
        out.append(f"timed out: {summary['states']}")
    if summary["submitted"] < summary["tasks"]:
        out.append(f"only {summary['submitted']} of {summary['tasks']} tasks were submitted")
    if lost:
        out.append(f"{len(lost)} acknowledged task(s) lost or stuck: {lost[:5]}")
    if failed:
        out.append(f"{len(failed)} task(s) failed: {failed[:5]}")
    if summary["duplicate_runs"] > summary["kills"]:
        out.append(f"{summary['duplicate_runs']} duplicate runs > {summary['kills']} kills")
    if unexplained:
        out.append(f"{len(unexplained)} task(s) re-run after an agent that was not killed")
    if summary["unexpected_exits"]:
        out.append(f"{len(summary['unexpected_exits'])} worker(s) exited without being killed")
    restart = summary.get("redis_restart")
    if restart is not None:
        if restart.get("ready_503_after_secs") is None:
            out.append("/ready never said 503 while Redis was down")
        if restart.get("ready_200_after_up_secs") is None:
            out.append("/ready never said 200 again after Redis came back")
    return out


def anomaly(run, town: Town, task_id: str, found: dict, starts: dict) -> dict:
    """Everything known about one task that went wrong."""
    task = found.get(task_id)
    lines = []
    for inc in run.gone + run.slots:
        for text in inc.log.read_text(errors="replace").splitlines():
            if task_id in text:
                lines.append(f"{inc.name}: {text}")
    return {
        "task": task_id,
        "state": task.state if task else "missing",
        "attempts": task.attempts if task else None,
        "assigned_to": task.assigned_to if task else None,
        "result": (task.result or "")[-RESULT_CHARS:] if task else None,
        "starts": starts.get(task_id, []),
        "worker_lines": lines[:LINES_SHOWN],
        "events": task_events(town, task_id),
    }


def task_events(town: Town, task_id: str) -> list[str]:
    """The task's events in the town's feed, one short line each."""
    out, after = [], ev.OLDEST
    while page := town.events.read(after, 1000):
        after = page[-1]["id"]
        out += [
            f"{d.get('timestamp')} {d.get('event_type')} {d.get('message')}"
            for d in page
            if d.get("task_id") == task_id
        ]
    return out[:LINES_SHOWN]


def last_line(path: Path) -> str:
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    return lines[-1] if lines else ""
