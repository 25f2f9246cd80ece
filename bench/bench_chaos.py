#!/usr/bin/env python3
"""Chaos at scale (issue 16 §5): workers SIGKILLed at random while tasks flow; nothing may be lost.

    .venv/bin/python bench/bench_chaos.py [--tasks 2000] [--workers 4] [--task-secs 0.05]
        [--kill-every 2,5] [--restart-as fresh|adopt] [--redis-restart [--redis-down-secs 5]]
        [--seed N] [--keep] [--json-file PATH]
    .venv/bin/python bench/bench_chaos.py --scaler      # needs Docker (bench/chaos_scaler.py)

Real processes throughout (``bench/chaos_town.py``): the project's own Redis, townhall under
gunicorn (its keeper recovers dead workers' work), W ``agent_worker.py`` processes running a
stand-in CLI that logs each start and sleeps ``--task-secs``, a killer that SIGKILLs a random
worker every ``--kill-every`` seconds (uniform between the two) and a supervisor that starts a
new one in its place. ``--redis-restart`` turns AOF on and restarts Redis half-way (SHUTDOWN,
``--redis-down-secs`` down), probing ``/ready`` throughout.

Prints one JSON summary: tasks, completed, lost, failed, kills, duplicate runs, wall time,
throughput, and the details behind them (``bench/chaos_report.py``). Exits 1 when the run fell
short of the guarantees — a task lost or failed, more duplicate runs than kills, a worker that
exited without being killed, ``/ready`` not going 503 and back — naming each under
``problems``, with the tasks involved under ``anomalies`` and the run's directory kept.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.chaos_town import Chaos, run_chaos  # noqa: E402

# The scaler variant's own defaults: containers, tasks in bursts of --backlog.
SCALER_DEFAULTS = {"tasks": 300, "task_secs": 0.5, "backlog": 40}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    d = Chaos()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--tasks", type=int, help=f"tasks to run ({d.tasks}; --scaler: {SCALER_DEFAULTS['tasks']})"
    )
    parser.add_argument("--workers", type=int, default=d.workers, help="workers (%(default)s)")
    parser.add_argument(
        "--task-secs",
        type=float,
        help=f"the CLI's sleep ({d.task_secs}; --scaler: {SCALER_DEFAULTS['task_secs']})",
    )
    parser.add_argument(
        "--kill-every",
        default=",".join(f"{x:g}" for x in d.kill_every_secs),
        metavar="LOW,HIGH",
        help="seconds between kills, uniform in [LOW, HIGH] (%(default)s)",
    )
    parser.add_argument(
        "--restart-as",
        choices=("fresh", "adopt"),
        default=d.restart_as,
        help="a killed worker comes back as a new agent, or adopts its id (%(default)s)",
    )
    parser.add_argument("--redis-restart", action="store_true", help="restart Redis half-way")
    parser.add_argument(
        "--redis-down-secs", type=float, default=d.redis_down_secs, help="(%(default)s)"
    )
    parser.add_argument(
        "--backlog",
        type=int,
        help=f"most tasks waiting at once ({d.backlog}); --scaler: tasks per burst "
        f"({SCALER_DEFAULTS['backlog']})",
    )
    parser.add_argument("--timeout-secs", type=float, default=d.timeout_secs, help="(%(default)s)")
    parser.add_argument("--seed", type=int, help="seed the killer's choices")
    parser.add_argument("--keep", action="store_true", help="keep the run's directory and logs")
    parser.add_argument("--scaler", action="store_true", help="the scaler variant (Docker)")
    parser.add_argument("--json-file", type=Path, help="also write the JSON summary here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    defaults = vars(Chaos()) | (SCALER_DEFAULTS if args.scaler else {})
    for key in ("tasks", "task_secs", "backlog"):
        if getattr(args, key) is None:
            setattr(args, key, defaults[key])
    low, _, high = args.kill_every.partition(",")
    chaos = Chaos(
        tasks=args.tasks,
        workers=args.workers,
        task_secs=args.task_secs,
        kill_every_secs=(float(low), float(high or low)),
        restart_as=args.restart_as,
        redis_restart=args.redis_restart,
        redis_down_secs=args.redis_down_secs,
        backlog=args.backlog,
        timeout_secs=args.timeout_secs,
        seed=args.seed,
        keep_dir=args.keep,
    )
    if args.scaler:
        from bench.chaos_scaler import run_scaler_chaos

        summary = run_scaler_chaos(chaos)
    else:
        summary = run_chaos(chaos)
    text = json.dumps(summary, indent=2)
    print(text)
    if args.json_file:
        args.json_file.write_text(text + "\n")
    return 1 if summary["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
