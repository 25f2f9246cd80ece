#!/usr/bin/env python3
"""Dispatch benchmark: agent_worker against RQ, Celery and Dramatiq, side by side on one Redis.

    pip install -e '.[bench]'          # RQ, Celery and Dramatiq are benchmark-only extras
    python bench/bench_dispatch.py [--samples 200] [--tasks 300] [--rounds 3] [--json]
        [--peers rq-simple,rq-fork,celery,dramatiq,floor]

What it measures, in one run on one embedded Redis (the town's own, on a unix socket; each peer
keeps its own keys or database number there):

- submit→start latency: the submitter's clock just before it submits, to the moment just before
  the no-op process is spawned. agent_worker: the task's ``started_at``, taken just before the
  CLI's ``Popen``. Every peer at the same point: its task function notes its clock on entry, just
  before its ``subprocess.run(["true"])``, and stores it afterwards, off the measured path (RQ in
  ``job.meta``, Celery and Dramatiq in a list; ``dispatch_peers.py``). RQ's own ``started_at``,
  written earlier (before the job function runs), is reported beside it. One task at a time,
  each worker idle when it arrives; samples go round all systems in turn, so machine noise hits
  them alike. The peers:

  - ``rq-simple``: RQ's ``SimpleWorker`` (the job runs in the worker's process);
  - ``rq-fork``: RQ's default ``Worker``, which forks a work horse per job;
  - ``celery``: a ``celery worker --pool=solo --concurrency=1`` subprocess, Redis broker,
    ``task_acks_late=True``, ``worker_prefetch_multiplier=1``;
  - ``dramatiq``: a ``dramatiq --processes 1 --threads 1`` subprocess, Redis broker. Its Redis
    consumer polls with a backoff while idle (5 ms doubling up to 1 s), so its latency grows with
    the time since its last task; here that is one round of the other systems;
  - ``floor``: a bare Python reader blocked in ``XREADGROUP`` on a stream of its own, which notes
    its clock the moment an ``XADD`` wakes it — no record, no claim, no process. It is the floor
    for any Redis-stream dispatcher written in Python on this machine, under the same noise.

- throughput of no-op tasks, one and two workers: ``--tasks`` submitted at once, first submit to
  the last completion, every task a real process; ``--rounds`` rounds, systems taking turns
  within each, median reported.

Then the ratios issue 16 sets targets for: agent_worker's p50 against the fastest peer's (at
least 3× lower) and against the floor (at most 1.5×), and its one-worker throughput (at least
500 tasks/s). Every wait is bounded (``--timeout-secs``); workers are stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from dispatch_peers import PEERS, THROUGHPUT_POLL_SECS, stop, wait_for  # noqa: E402
from dispatch_report import print_report, summarise  # noqa: E402

from tinytown.config import load_config  # noqa: E402
from tinytown.connection.embedded import EmbeddedServer, find_server_binary  # noqa: E402
from tinytown.core.clock import parse_rfc3339  # noqa: E402
from tinytown.core.states import TERMINAL_TASK_STATES  # noqa: E402
from tinytown.store import Town  # noqa: E402

RQ_QUEUE = "tt-bench"
RQ_FORK_QUEUE = "tt-bench-fork"
FLOOR_STREAM = "tt-bench-floor"
RQ_JOB = "peer_rq.run_true"  # by name: the RQ worker imports it from bench/
ALL_PEERS = ("rq-simple", "rq-fork", "celery", "dramatiq", "floor")
PEER_PACKAGES = {"rq-simple": "rq", "rq-fork": "rq", "celery": "celery", "dramatiq": "dramatiq"}
WARMUP_SAMPLES = 5
SAMPLE_PAUSE_SECS = 0.002


@dataclass
class System:
    """One dispatcher under test: how to start its nth worker, see ``count`` of them ready, and
    measure one task's latency (seconds, and a reference or None) and a batch's throughput."""

    name: str
    start: Callable[[int], subprocess.Popen]
    wait_ready: Callable[[int, float], None]
    latency: Callable[[float], tuple[float, float | None]]
    throughput: Callable[[int, float], float] | None = None  # None: latency only (the floor)


# -- set-up ------------------------------------------------------------------------------------


def make_town(root: Path) -> Town:
    (root / "tinytown.toml").write_text(
        'name = "bench"\ndefault_cli = "noop"\n\n[agent]\nidle_timeout_secs = 0\n'
        "heartbeat_interval_secs = 5\nclaim_timeout_secs = 60\n\n"
        '[agent_clis.noop]\ncommand = "true"\n'
    )
    return Town.connect(load_config(root, env={}))


def start_tt_worker(root: Path, n: int, log_dir: Path) -> subprocess.Popen:
    env = {**os.environ, "TINYTOWN_AGENT_NAME": f"bench-{n}"}
    env.pop("REDIS_URL", None)
    with open(log_dir / f"tt-worker-{n}.log", "w") as log:
        return subprocess.Popen(
            [sys.executable, str(ROOT / "agent_worker.py"), "--town", str(root)],
            env=env,
            stdout=log,
            stderr=log,
        )


FLOOR_READER = """
import sys, time, redis
r = redis.Redis.from_url(sys.argv[1], decode_responses=True)
stream = sys.argv[2]
try:
    r.xgroup_create(stream, "g", id="$", mkstream=True)
except redis.ResponseError:
    pass
print("ready", flush=True)
while True:
    reply = r.xreadgroup("g", "c", {stream: ">"}, count=1, block=1000)
    if not reply:
        continue
    rows = reply[stream][0] if isinstance(reply, dict) else reply[0][1]
    woke = time.time()
    entry_id, fields = rows[0]
    if "stop" in fields:
        break
    r.set(stream + ":" + fields["n"], repr(woke))
    r.xack(stream, "g", entry_id)
"""


def start_floor_reader(url: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", FLOOR_READER, url, FLOOR_STREAM], stdout=subprocess.PIPE, text=True
    )
    if proc.stdout.readline().strip() != "ready":
        raise RuntimeError("the floor reader did not start")
    return proc


def floor_latency(r, timeout: float) -> tuple[float, None]:
    """(XADD → the bare reader's wake-up, no reference) in seconds."""
    submitted = time.time()
    n = repr(submitted)
    r.xadd(FLOOR_STREAM, {"n": n})
    woke = wait_for(lambda: r.get(f"{FLOOR_STREAM}:{n}"), timeout, "the floor reader")
    return float(woke) - submitted, None


def start_rq_worker(
    url: str, n: int, log_dir: Path, queue: str = RQ_QUEUE, worker_class: str = "SimpleWorker"
) -> subprocess.Popen:
    code = (
        f"import redis, rq; from rq.worker import {worker_class};"
        f"r = redis.Redis.from_url({url!r});"
        f"{worker_class}([rq.Queue({queue!r}, connection=r)], connection=r,"
        f" name='{queue}-{n}').work(logging_level='WARNING')"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent)}
    with open(log_dir / f"{queue}-worker-{n}.log", "w") as log:
        return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=log, stderr=log)


def wait_tt_idle(town: Town, count: int, timeout: float) -> None:
    wait_for(
        lambda: town.agents.counts().live["idle"] >= count, timeout, f"{count} idle agent_worker(s)"
    )


def wait_rq_idle(queue, count: int, timeout: float) -> None:
    from rq import Worker

    def idle() -> int:
        workers = Worker.all(connection=queue.connection, queue=queue)
        return sum(1 for w in workers if w.get_state() == "idle") >= count

    wait_for(idle, timeout, f"{count} idle RQ worker(s) on {queue.name}")


# -- measurements ------------------------------------------------------------------------------


def tt_latency(town: Town, timeout: float) -> tuple[float, float]:
    """(submit→started_at, created_at→started_at) in seconds. The wait reads one field a poll
    (as the peers' waits read one key), then the record once."""
    submitted = time.time()
    task = town.tasks.add("noop")
    key = town.keys.task(task.id)
    wait_for(lambda: town.redis.hget(key, "state") in TERMINAL_TASK_STATES, timeout, "a task")
    done = town.tasks.get(task.id)
    started = parse_rfc3339(done.started_at).timestamp()
    return started - submitted, started - parse_rfc3339(done.created_at).timestamp()


def rq_latency(queue, timeout: float) -> tuple[float, float]:
    """(submit→just before the job's process starts, submit→RQ's own started_at) in seconds."""
    submitted = time.time()
    job = queue.enqueue(RQ_JOB)
    wait_for(lambda: job.get_status(refresh=True) in ("finished", "failed"), timeout, "an RQ job")
    job.refresh()
    started = job.started_at.replace(tzinfo=UTC).timestamp()
    return job.meta["spawn_at"] - submitted, started - submitted


def tt_throughput(town: Town, n: int, timeout: float) -> float:
    before = town.tasks.counts()["completed"]
    start = time.time()
    ids = [town.tasks.add("noop").id for _ in range(n)]
    wait_for(
        lambda: town.tasks.counts()["completed"] >= before + n,
        timeout,
        f"{n} tasks",
        THROUGHPUT_POLL_SECS,
    )
    last = max(parse_rfc3339(t.completed_at).timestamp() for t in town.tasks.many(ids))
    return n / (last - start)


def rq_throughput(queue, n: int, timeout: float) -> float:
    from rq.registry import FinishedJobRegistry

    registry = FinishedJobRegistry(queue=queue)
    before = registry.count
    start = time.time()
    jobs = [queue.enqueue(RQ_JOB) for _ in range(n)]
    wait_for(lambda: registry.count >= before + n, timeout, f"{n} RQ jobs", THROUGHPUT_POLL_SECS)
    for j in jobs:
        j.refresh()
    last = max(j.ended_at.replace(tzinfo=UTC).timestamp() for j in jobs)
    return n / (last - start)


def installed() -> set[str]:
    return {m for m in ("rq", "celery", "dramatiq") if importlib.util.find_spec(m) is not None}


# -- the run -----------------------------------------------------------------------------------


def build_systems(peers: list[str], town: Town, root: Path, url: str, r) -> list[System]:
    systems = [
        System(
            "agent_worker",
            lambda n: start_tt_worker(root, n, root),
            lambda count, t: wait_tt_idle(town, count, t),
            lambda t: tt_latency(town, t),
            lambda n, t: tt_throughput(town, n, t),
        )
    ]
    for name, queue_name, worker_class in (
        ("rq-simple", RQ_QUEUE, "SimpleWorker"),
        ("rq-fork", RQ_FORK_QUEUE, "Worker"),
    ):
        if name in peers:
            from rq import Queue

            queue = Queue(queue_name, connection=r)
            systems.append(
                System(
                    name,
                    lambda n, q=queue_name, w=worker_class: start_rq_worker(url, n, root, q, w),
                    lambda count, t, q=queue: wait_rq_idle(q, count, t),
                    lambda t, q=queue: rq_latency(q, t),
                    lambda n, t, q=queue: rq_throughput(q, n, t),
                )
            )
    for name, peer_class in PEERS.items():
        if name in peers:
            peer = peer_class(name, url, root)
            systems.append(System(name, peer.start, peer.wait_ready, peer.latency, peer.throughput))
    if "floor" in peers:
        systems.append(
            System(
                "floor",
                lambda n: start_floor_reader(url),
                lambda count, t: None,
                lambda t: floor_latency(r, t),
            )
        )
    return systems


def measure(systems: list[System], args, procs: list[subprocess.Popen]) -> dict:
    """Latency samples, then throughput rounds with one and two workers, interleaved."""
    for system in systems:
        procs.append(system.start(1))
    for system in systems:
        system.wait_ready(1, args.timeout_secs)
    for _ in range(WARMUP_SAMPLES):  # not recorded
        for system in systems:
            system.latency(args.timeout_secs)
    lat: dict[str, list[float]] = {s.name: [] for s in systems}
    ref: dict[str, list[float]] = {s.name: [] for s in systems}
    for _ in range(args.samples):  # in turn, so all see the same machine noise
        for system in systems:
            total, reference = system.latency(args.timeout_secs)
            lat[system.name].append(total)
            if reference is not None:
                ref[system.name].append(reference)
            time.sleep(SAMPLE_PAUSE_SECS)
    busy = [s for s in systems if s.throughput is not None]
    thr: dict[str, dict[int, list[float]]] = {s.name: {1: [], 2: []} for s in busy}
    for workers in (1, 2):
        if workers == 2:
            for system in busy:
                procs.append(system.start(2))
            for system in busy:
                system.wait_ready(2, args.timeout_secs)
        for _ in range(args.rounds):
            for system in busy:
                thr[system.name][workers].append(system.throughput(args.tasks, args.timeout_secs))
    return {"latency": lat, "reference": ref, "throughput": thr}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=200, help="latency samples per system")
    parser.add_argument("--tasks", type=int, default=300, help="tasks per throughput round")
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds per system")
    parser.add_argument(
        "--peers",
        default=",".join(ALL_PEERS),
        help=f"comma-separated, from {','.join(ALL_PEERS)} (default: all)",
    )
    parser.add_argument(
        "--floor", action="store_true", help="add the floor (in the default --peers already)"
    )
    parser.add_argument("--timeout-secs", type=float, default=60.0, help="bound on every wait")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    parser.add_argument("--json-file", type=Path, help="also write the JSON document here")
    args = parser.parse_args()
    peers = [p.strip() for p in args.peers.split(",") if p.strip()] + ["floor"] * args.floor
    if unknown := set(peers) - set(ALL_PEERS):
        parser.error(f"--peers: unknown {', '.join(sorted(unknown))}; choose from {ALL_PEERS}")
    missing = sorted({PEER_PACKAGES[p] for p in peers if p in PEER_PACKAGES} - installed())
    if missing:
        parser.error(
            f"{', '.join(missing)} not installed: pip install -e '.[bench]', "
            "or leave those peers out of --peers"
        )
    import redis

    root = Path(tempfile.mkdtemp(prefix="ttb-", dir="/tmp"))
    town = make_town(root)
    server = EmbeddedServer(town.config)
    url = server.target.url
    r = redis.Redis.from_url(url)
    procs: list[subprocess.Popen] = []
    try:
        systems = build_systems(peers, town, root, url, r)
        raw = measure(systems, args, procs)
    finally:
        if "floor" in peers:
            r.xadd(FLOOR_STREAM, {"stop": "1"})
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            stop(p)
        server.stop()
        shutil.rmtree(root, ignore_errors=True)

    binary = find_server_binary()
    result = summarise(raw, args, f"embedded {binary.flavour} {binary.version_text}")
    result["redis"] += f" on {server.target.display}"
    if args.json_file:
        args.json_file.write_text(json.dumps(result, indent=2))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
