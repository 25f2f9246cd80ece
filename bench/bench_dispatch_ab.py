#!/usr/bin/env python3
"""Submit→start latency of two checkouts of Tinytown, side by side in one run (an A/B test).

    git worktree add /tmp/tt-base <rev>          # the code to compare against
    python bench/bench_dispatch_ab.py --baseline /tmp/tt-base [--samples 300] [--rounds 3] [--json]

On this shared, noisy machine a change worth a few percent cannot be seen by comparing two
``bench_dispatch.py`` runs made minutes apart; it can in one run where the two versions take
turns. Each checkout gets its own town on one embedded Redis (started with this checkout's code),
its own ``agent_worker.py`` (CLI ``true``) and its own submitter process that creates tasks with
its own ``TaskStore.add``. Samples alternate between the two, one task at a time with both
workers idle, and are measured as in ``bench_dispatch.py``: the submitter's clock just before
``add`` → the task's ``started_at``. Prints each round's p50s and their ratio (this checkout ÷
baseline; below 1 is faster).

Every wait is bounded; workers and submitters are stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_dispatch import make_town, wait_for  # noqa: E402

from tinytown.connection.embedded import EmbeddedServer  # noqa: E402
from tinytown.core.clock import parse_rfc3339  # noqa: E402
from tinytown.core.keys import Keys  # noqa: E402

# Runs with the checkout's own code: a line on stdin → one task added →
# "<task id> <clock before add>".
SUBMITTER = """
import sys, time
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from tinytown.config import load_config
from tinytown.store import Town
town = Town.connect(load_config(Path(sys.argv[2]), env={"REDIS_URL": sys.argv[3]}))
print("ready", flush=True)
for _ in sys.stdin:
    before = time.time()
    task = town.tasks.add("noop")
    print(task.id, repr(before), flush=True)
"""

TOWN = (
    'name = "{name}"\ndefault_cli = "noop"\n\n[agent]\nidle_timeout_secs = 0\n'
    "heartbeat_interval_secs = 5\n"
    'claim_timeout_secs = 60\n\n[agent_clis.noop]\ncommand = "true"\n'
)


class Side:
    """One checkout: its town directory, worker and submitter."""

    def __init__(self, name: str, checkout: Path, base: Path, url: str):
        self.name, self.keys = name, Keys(name)
        root = base / name
        root.mkdir()
        (root / "tinytown.toml").write_text(TOWN.format(name=name))
        env = {**os.environ, "REDIS_URL": url, "TINYTOWN_AGENT_NAME": name}
        with open(root / "worker.log", "w") as log:
            self.worker = subprocess.Popen(
                [sys.executable, str(checkout / "agent_worker.py"), "--town", str(root)],
                env=env,
                stdout=log,
                stderr=log,
            )
        self.submitter = subprocess.Popen(
            [sys.executable, "-c", SUBMITTER, str(checkout), str(root), url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        if read_line(self.submitter, 60.0) != "ready":
            self.stop()
            raise RuntimeError(f"the {name} submitter did not start (checkout {checkout})")

    def sample(self, r, timeout: float) -> float:
        """One task, submit → started_at, in ms."""
        self.submitter.stdin.write("go\n")
        self.submitter.stdin.flush()
        task_id, before = read_line(self.submitter, timeout).split()
        key = self.keys.task(task_id)
        started = wait_for(
            lambda: r.hget(key, "state") in ("completed", "failed") and r.hget(key, "started_at"),
            timeout,
            f"a {self.name} task",
        )
        return (parse_rfc3339(started).timestamp() - float(before)) * 1000

    def stop(self) -> None:
        for p in (self.worker, self.submitter):
            p.send_signal(signal.SIGTERM)
        for p in (self.worker, self.submitter):
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()


def read_line(proc: subprocess.Popen, timeout: float) -> str:
    """The process's next line on stdout, waiting at most ``timeout`` (one line per request, so
    nothing waits in Python's buffer while ``select`` looks at the pipe)."""
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        raise TimeoutError(f"no answer from pid {proc.pid} within {timeout} s")
    return proc.stdout.readline().strip()


def wait_idle(r, sides: list[Side], timeout: float) -> None:
    def idle() -> bool:
        def members(key: str) -> int:  # a set before liveness was indexed, a sorted set after
            return r.zcard(key) if r.type(key) == "zset" else r.scard(key)

        return all(members(s.keys.agents_in_state("idle")) >= 1 for s in sides)

    wait_for(idle, timeout, "both workers idle")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--baseline", type=Path, required=True, help="a checkout to compare against"
    )
    parser.add_argument("--samples", type=int, default=300, help="samples per side and round")
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds, each with fresh towns and workers"
    )
    parser.add_argument("--timeout-secs", type=float, default=60.0, help="bound on every wait")
    parser.add_argument("--json", action="store_true", help="print one JSON document at the end")
    parser.add_argument("--json-file", type=Path, help="also write the JSON document here")
    args = parser.parse_args()
    if not (args.baseline / "agent_worker.py").is_file():
        parser.error(
            f"--baseline {args.baseline}: no agent_worker.py there (give a Tinytown checkout)"
        )
    import redis

    rounds = []
    for n in range(1, args.rounds + 1):
        base = Path(tempfile.mkdtemp(prefix="ttab-", dir="/tmp"))
        server = EmbeddedServer(make_town(base).config)
        r = redis.Redis.from_url(server.target.url, decode_responses=True)
        sides: list[Side] = []
        try:
            for name, checkout in (("baseline", args.baseline.resolve()), ("this", ROOT)):
                sides.append(Side(name, checkout, base, server.target.url))
            wait_idle(r, sides, args.timeout_secs)
            ms: dict[str, list[float]] = {s.name: [] for s in sides}
            for i in range(args.samples + 10):  # the first 10 warm up
                for side in sides if i % 2 else sides[::-1]:  # alternate who goes first
                    value = side.sample(r, args.timeout_secs)
                    if i >= 10:
                        ms[side.name].append(value)
                    time.sleep(0.002)
        finally:
            for side in sides:
                side.stop()
            server.stop()
            shutil.rmtree(base, ignore_errors=True)
        p50 = {k: statistics.median(v) for k, v in ms.items()}
        ratio = p50["this"] / p50["baseline"]
        rounds.append(
            {"baseline_p50_ms": p50["baseline"], "this_p50_ms": p50["this"], "ratio": ratio}
        )
        if not args.json:
            print(
                f"round {n}: baseline p50 {p50['baseline']:.3f} ms, this p50 {p50['this']:.3f} ms, "
                f"this ÷ baseline {ratio:.3f}"
            )
    out = {"baseline": str(args.baseline.resolve()), "samples": args.samples, "rounds": rounds}
    if args.json_file:
        args.json_file.write_text(json.dumps(out, indent=2))
    if args.json:
        print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
