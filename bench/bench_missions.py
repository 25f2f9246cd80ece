#!/usr/bin/env python3
"""Missions: how fast a finished item hands off to the next, and what a mission costs over
submitting the same tasks by hand.

    python bench/bench_missions.py [--items 20] [--rounds 3]

One embedded Redis (the town's own, unix socket), one ``agent_worker.py`` running the CLI
``true``, and a mission dispatcher thread in this process (as townhall runs one, with the
default 5 s backstop tick: every hand-off here is driven by the event feed).

- **Item hand-off**: a chain mission of ``--items`` no-op items; for each link, the time from
  the ``task_completed`` event of an item's task to the ``task_created`` event of the next
  item's task (both timestamps from the processes that wrote them, on this machine). Target:
  p50 ≤ 100 ms (upstream ticks every 30 s).
- **Per item**: that mission's wall time from start to ``completed``, divided by the items,
  against a script that submits the same no-op tasks one after another, each the moment the
  previous one completed (it waits on the same event feed, not by polling). Rounds alternate.

Every wait is bounded; the worker is stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_dispatch import make_town, start_tt_worker, wait_for  # noqa: E402

from tinytown.connection.embedded import EmbeddedServer  # noqa: E402
from tinytown.core import events as ev  # noqa: E402
from tinytown.core.clock import parse_rfc3339  # noqa: E402
from tinytown.missions.dispatcher import Dispatcher  # noqa: E402
from tinytown.missions.start import start_mission  # noqa: E402


def chain(n: int) -> list[dict]:
    return [
        {"key": f"i{k}", "title": f"no-op {k}", **({"depends_on": [f"i{k - 1}"]} if k else {})}
        for k in range(n)
    ]


def mission_round(town, n: int, timeout: float) -> tuple[float, list[float]]:
    """(seconds per item, hand-off gaps in seconds) of one chain mission."""
    start = time.time()
    mission, _ = start_mission(town, items=chain(n), policy={"max_parallel_items": 1})
    wait_for(lambda: town.missions.get(mission.id).terminal, timeout, "the mission")
    elapsed = time.time() - start
    if town.missions.get(mission.id).state != "completed":
        raise RuntimeError(f"mission {mission.id} ended {town.missions.get(mission.id).state}")
    events = town.events.read(mission_id=mission.id, limit=10_000)
    done = {
        e["work_item_id"]: e["timestamp"] for e in events if e["event_type"] == ev.TASK_COMPLETED
    }
    made = {e["work_item_id"]: e["timestamp"] for e in events if e["event_type"] == ev.TASK_CREATED}
    items = {i["key"]: i["id"] for i in town.missions.work_items(mission.id)}
    gaps = []
    for k in range(1, n):
        before, after = items[f"i{k - 1}"], items[f"i{k}"]
        gaps.append((parse_rfc3339(made[after]) - parse_rfc3339(done[before])).total_seconds())
    return elapsed / n, gaps


def by_hand_round(town, n: int, timeout: float) -> float:
    """Seconds per task: submit, wait for its task_completed event, submit the next."""
    cursor = town.events.last_id()
    start = time.time()
    for _ in range(n):
        task = town.tasks.add("noop")
        deadline = time.monotonic() + timeout
        while True:
            found = town.events.read(cursor, 100, wait_ms=1000)
            if found:
                cursor = found[-1]["id"]
            if any(
                e.get("task_id") == task.id and e["event_type"] == ev.TASK_COMPLETED for e in found
            ):
                break
            if time.monotonic() > deadline:
                raise TimeoutError("a task by hand")
    return (time.time() - start) / n


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=20, help="items in the chain (default 20)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each (default 3)")
    parser.add_argument("--timeout-secs", type=float, default=120.0, help="bound on every wait")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    parser.add_argument("--json-file", type=Path, help="also write the JSON document here")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="ttm-", dir="/tmp"))
    town = make_town(root)
    worker = start_tt_worker(root, 1, root)
    dispatcher = Dispatcher(town).start()
    try:
        wait_for(lambda: town.agents.counts().live["idle"] >= 1, args.timeout_secs, "a worker")
        mission_round(town, 3, args.timeout_secs)  # warm-up
        per_item, per_task, gaps = [], [], []
        for _ in range(args.rounds):
            secs, round_gaps = mission_round(town, args.items, args.timeout_secs)
            per_item.append(secs)
            gaps += round_gaps
            per_task.append(by_hand_round(town, args.items, args.timeout_secs))
    finally:
        dispatcher.stop()
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except Exception:
            worker.kill()
        town.close()
        EmbeddedServer(town.config).stop()  # the town's own Redis, by its pid file
        shutil.rmtree(root, ignore_errors=True)

    out = {
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "python": platform.python_version(),
        "items": args.items,
        "rounds": args.rounds,
        "handoff_ms": {
            "p50": 1000 * statistics.median(gaps),
            "p90": 1000 * pct(gaps, 0.9),
            "max": 1000 * max(gaps),
            "samples": len(gaps),
        },
        "mission_secs_per_item": per_item,
        "by_hand_secs_per_task": per_task,
        "ratio_median": statistics.median(per_item) / statistics.median(per_task),
    }
    if args.json_file:
        args.json_file.write_text(json.dumps(out, indent=2))
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    h = out["handoff_ms"]
    print(f"item hand-off (task completed → next item's task created), {h['samples']} links:")
    print(f"  p50 {h['p50']:.1f} ms   p90 {h['p90']:.1f} ms   max {h['max']:.1f} ms")
    for k, (a, b) in enumerate(zip(per_item, per_task), 1):
        print(
            f"round {k}: mission {1000 * a:.1f} ms/item, by hand {1000 * b:.1f} ms/task, "
            f"ratio {a / b:.2f}"
        )
    print(f"median ratio (mission ÷ by hand): {out['ratio_median']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
