"""The numbers ``bench_dispatch.py`` reports: percentiles, medians, ratios, issue 16's targets,
and the printed table. Raw samples in, a JSON-ready dict and text out; nothing here starts or
talks to anything."""

from __future__ import annotations

import os
import statistics
import sys
from datetime import UTC, datetime

# issue 16's targets for agent_worker
TARGET_X_BELOW_FASTEST_PEER = 3.0
TARGET_X_OF_FLOOR = 1.5
TARGET_TASKS_PER_SEC_1_WORKER = 500.0


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def summarise(raw: dict, args, redis_text: str) -> dict:
    ms = {k: [v * 1000 for v in vals] for k, vals in raw["latency"].items()}
    latency = {
        k: {
            "p50": round(statistics.median(v), 3),
            "p99": round(pct(v, 99), 3),
            "min": round(min(v), 3),
        }
        for k, v in ms.items()
    }
    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "redis": redis_text,
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "samples": args.samples,
        "tasks": args.tasks,
        "rounds": args.rounds,
        "latency_ms": latency,
        # agent_worker: created_at → started_at; RQ: submit → its own started_at
        # (before the job runs)
        "reference_ms": {
            k: {"p50": round(statistics.median(v) * 1000, 3), "p99": round(pct(v, 99) * 1000, 3)}
            for k, v in raw["reference"].items()
            if v
        },
        "throughput_tasks_per_sec": {
            k: {str(w): round(statistics.median(x), 1) for w, x in v.items()}
            for k, v in raw["throughput"].items()
        },
        "throughput_rounds": {
            k: {str(w): [round(y, 1) for y in x] for w, x in v.items()}
            for k, v in raw["throughput"].items()
        },
    }
    tt = latency["agent_worker"]["p50"]
    result["p50_over_agent_worker"] = {k: round(v["p50"] / tt, 2) for k, v in latency.items()}
    result["targets"] = targets(result)
    return result


def targets(result: dict) -> dict:
    """Issue 16's three targets for agent_worker, each with its number and whether it is met."""
    lm = result["latency_ms"]
    tt = lm["agent_worker"]["p50"]
    out = {}
    peers = [k for k in lm if k not in ("agent_worker", "floor")]
    if peers:
        fastest = min(peers, key=lambda k: lm[k]["p50"])
        x = lm[fastest]["p50"] / tt
        out["p50_x_below_fastest_peer"] = {
            "peer": fastest,
            "value": round(x, 2),
            "target": f">= {TARGET_X_BELOW_FASTEST_PEER:g}",
            "met": x >= TARGET_X_BELOW_FASTEST_PEER,
        }
    if "floor" in lm:
        x = tt / lm["floor"]["p50"]
        out["p50_x_of_floor"] = {
            "value": round(x, 2),
            "target": f"<= {TARGET_X_OF_FLOOR:g}",
            "met": x <= TARGET_X_OF_FLOOR,
        }
    rate = result["throughput_tasks_per_sec"]["agent_worker"]["1"]
    out["tasks_per_sec_1_worker"] = {
        "value": rate,
        "target": f">= {TARGET_TASKS_PER_SEC_1_WORKER:g}",
        "met": rate >= TARGET_TASKS_PER_SEC_1_WORKER,
    }
    return out


def print_report(result: dict) -> None:
    lm, tp, ratio = (
        result["latency_ms"],
        result["throughput_tasks_per_sec"],
        result["p50_over_agent_worker"],
    )
    print(f"{result['when']}  {result['cpus']} CPUs  Python {result['python']}  {result['redis']}")
    print(
        f"submit→start (just before the task's process starts): {result['samples']} samples each, "
        f"in turn; throughput: median of {result['rounds']} rounds of {result['tasks']} tasks"
    )
    print(
        f"{'':14}{'p50 ms':>9}{'p99 ms':>9}{'1 worker/s':>12}{'2 workers/s':>13}"
        f"{'p50 ÷ agent_worker':>20}"
    )
    for k in lm:
        one, two = tp.get(k, {}).get("1"), tp.get(k, {}).get("2")
        print(
            f"{k:14}{lm[k]['p50']:>9.3f}{lm[k]['p99']:>9.3f}"
            f"{'-' if one is None else f'{one:.1f}':>12}{'-' if two is None else f'{two:.1f}':>13}"
            f"{ratio[k]:>19.2f}×"
        )
    t = result["targets"]
    print("issue 16 targets for agent_worker:")
    if "p50_x_below_fastest_peer" in t:
        x = t["p50_x_below_fastest_peer"]
        print(
            f"  p50 {x['value']}× below the fastest peer ({x['peer']}); target {x['target']}×: "
            f"{'met' if x['met'] else 'MISSED'}"
        )
    if "p50_x_of_floor" in t:
        x = t["p50_x_of_floor"]
        print(
            f"  p50 {x['value']}× the floor; target {x['target']}×: "
            f"{'met' if x['met'] else 'MISSED'}"
        )
    x = t["tasks_per_sec_1_worker"]
    print(
        f"  {x['value']:.0f} tasks/s with 1 worker; target {x['target']}: "
        f"{'met' if x['met'] else 'MISSED'}"
    )
    rm = result["reference_ms"]
    also = [f"agent_worker created_at→started_at p50 {rm['agent_worker']['p50']:.3f} ms"]
    also += [
        f"{k} submit→RQ's own started_at p50 {rm[k]['p50']:.3f} ms"
        for k in rm
        if k != "agent_worker"
    ]
    print("also: " + "; ".join(also))
