"""``status``: this town's worker containers on every outpost, each with its Docker health, its
agent's state and task, age and cost, and what the scaler remembers of it (marked in error,
verdict unknown); contradictions between townhall's answers; outposts holding starts; the hourly
rate and totals. As a table, or one JSON object with ``--json``. Reads only, changes nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping

from tinytown.scaler.crash_loops import CrashWatch
from tinytown.scaler.epoch import iso
from tinytown.scaler.errors import ExitStatus, OutpostError, TownhallError
from tinytown.scaler.health import evidence_conflicts, health_verdict
from tinytown.scaler.log import log
from tinytown.scaler.memory import ContainerMemory, State
from tinytown.scaler.model import Config
from tinytown.scaler.outposts import DockerOutpost
from tinytown.scaler.policy import hourly_cost
from tinytown.scaler.report import worker_ref
from tinytown.scaler.state_file import StateOfAnotherTown, load_state, state_path
from tinytown.scaler.townhall import Townhall


def run_status(config: Config, environ: Mapping[str, str], as_json: bool) -> ExitStatus:
    """Print the status; DOCKER_UNAVAILABLE when no outpost answered, else SUCCESS."""
    townhall = Townhall(config)
    now = time.time()
    town, sig, agents, townhall_error, state_error = config.town, None, None, None, None
    try:
        sig = townhall.scaling_signal()
        if town and sig.town != town:
            raise TownhallError(
                f"townhall at {townhall.shown} serves town {sig.town!r}, not the "
                f"configured town {town!r}"
            )
        town = sig.town
        agents = townhall.agents()
    except TownhallError as err:
        townhall_error = str(err)
        log("warning", "townhall_unavailable", reason=str(err), action="agent states unknown")
    state = State(town=town)
    if town:
        try:
            state = load_state(state_path(config, environ, town), town)
        except StateOfAnotherTown as err:
            state_error = str(err)
            log(
                "warning",
                "state_other_town",
                path=str(err.path),
                state_town=err.state_town,
                town=town,
                action="shown without the scaler's memory",
            )
    rows, outposts, workers = [], [], []
    for o in config.outposts:
        outpost = DockerOutpost(o, config.docker_timeout_secs)
        hold = state.crash_loops.get(o.name, CrashWatch()).hold
        held = (
            {"starts_held_until": iso(hold.open_until), "hold_reason": hold.last_error}
            if hold.is_open(now)
            else {"starts_held_until": None}
        )
        try:
            found = outpost.list_workers(town, full=True)
        except OutpostError as err:
            outposts.append({"name": o.name, "reachable": False, "error": str(err), **held})
            log("warning", "outpost_unreachable", outpost=o.name, error=str(err))
            continue
        outposts.append(
            {
                "name": o.name,
                "reachable": True,
                "live": sum(w.live for w in found),
                "max_workers": o.max_workers,
                "cost_per_hour": o.cost_per_hour,
                **held,
            }
        )
        workers.extend(found)
        for w in found:
            agent = (agents or {}).get(w.agent_id or "")
            memory = state.containers.get(w.container_id)
            marked = (
                {"at": iso(memory.marked_error_at), "reason": memory.marked_reason}
                if memory and memory.marked_error_at is not None
                else None
            )
            rows.append(
                {
                    **worker_ref(w),
                    "status": w.status,
                    "health": w.health,
                    "agent_state": agent.state
                    if agent
                    else ("unknown" if agents is None else "unregistered"),
                    "current_task": agent.current_task if agent else None,
                    "age_secs": round(w.age_secs(now) or 0),
                    "cost_so_far": round(w.cost_so_far(now), 6),
                    "marked_error": marked,
                    "evidence": None,
                }
            )
    # The same judgement a pass would make: contradictions, and containers whose verdict is unknown.
    conflicts = (
        evidence_conflicts(sig, agents, workers, now, config.start_grace_secs)
        if sig is not None and agents is not None
        else ()
    )
    if agents is not None and not conflicts:
        for w, row in zip(workers, rows):
            memory = state.containers.get(w.container_id) or ContainerMemory(w.outpost)
            quiet = max(memory.restarted_at or 0.0, memory.drain_requested_at or 0.0)
            verdict = health_verdict(
                w,
                agents.get(w.agent_id or ""),
                now,
                config.unhealthy_after_secs,
                config.start_grace_secs,
                quiet or None,
                config.trust_townhall_alone,
            )
            if verdict.unknown:
                row["evidence"] = {"kind": verdict.unknown, "reason": verdict.reason}
    live_count = sum(w.live for w in workers)
    cost = {
        "hourly": round(hourly_cost(workers), 6),
        "cap_hourly": config.cost_cap_hourly,
        "so_far": round(sum(w.cost_so_far(now) for w in workers), 6),
        "removed_total": round(state.removed_cost, 6),
    }
    if as_json:
        print(
            json.dumps(
                {
                    "ts": iso(now),
                    "town": town,
                    "townhall_error": townhall_error,
                    "evidence_inconsistent": list(conflicts),
                    "state_error": state_error,
                    "containers": rows,
                    "outposts": outposts,
                    "cost": cost,
                }
            )
        )
    else:
        print(
            f"town {town or '(any)'}: {live_count} live, {len(workers) - live_count} "
            f"not live; {cost['hourly']:.4f}/h; {cost['so_far']:.4f} so far, "
            f"{cost['removed_total']:.4f} for removed workers"
        )
        header = (
            "CONTAINER",
            "OUTPOST",
            "STATUS",
            "HEALTH",
            "AGENT_ID",
            "AGENT_STATE",
            "AGE",
            "COST",
        )
        table = [header] + [
            (
                r["name"],
                r["outpost"],
                r["status"],
                r["health"] or "-",
                r["agent_id"] or "-",
                r["agent_state"],
                f"{r['age_secs'] // 60}m",
                f"{r['cost_so_far']:.4f}",
            )
            for r in rows
        ]
        widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
        for row in table:
            print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
        for conflict in conflicts:
            print(
                f"evidence inconsistent: {conflict}; nothing is drained or restarted until "
                "townhall's answers agree"
            )
        if state_error:
            print(f"state: {state_error}")
        for r in rows:
            if r["marked_error"]:
                print(
                    f"{r['name']}: marked in error at {r['marked_error']['at']} "
                    f"({r['marked_error']['reason']}); not counted as a worker. Read "
                    f"`docker logs {r['name']}`, then `docker rm -f {r['name']}`"
                )
            if r["evidence"]:
                print(f"{r['name']}: {r['evidence']['kind']}: {r['evidence']['reason']}")
        for o in outposts:
            if not o["reachable"]:
                print(f"outpost {o['name']}: unreachable ({o['error']})")
            if o["starts_held_until"]:
                print(
                    f"outpost {o['name']}: no new workers until {o['starts_held_until']} "
                    f"({o['hold_reason']})"
                )
    if not any(o["reachable"] for o in outposts):
        return ExitStatus.DOCKER_UNAVAILABLE
    return ExitStatus.SUCCESS
