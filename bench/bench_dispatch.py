#!/usr/bin/env python3
"""Dispatch benchmark: agent_worker vs RQ's SimpleWorker, side by side on one real Redis.

    pip install -e '.[bench]'          # RQ is a benchmark-only extra
    python bench/bench_dispatch.py [--samples 200] [--tasks 300] [--json]

What it measures, in one run on one embedded Redis (the town's own, on a unix socket):

- submit→start latency: the submitter's clock just before it submits, to the moment just before
  the no-op process is spawned. agent_worker: the task's ``started_at``, taken just before the
  CLI's ``Popen``. RQ, at the same point: the job function notes its clock just before its
  ``subprocess.run`` (kept in ``job.meta``); RQ's own ``started_at``, written earlier (before
  the job function runs), is reported beside it. One task at a time, each worker idle and
  blocked when it arrives; samples alternate between the two systems.
- throughput of no-op tasks, one and two workers: N tasks submitted at once, first submit to the
  last completion. agent_worker runs the CLI ``true`` (a real process per task); the RQ job runs
  ``subprocess.run(["true"])``, so both start one process per task.

``--floor`` adds a third column measured the same way: a bare Python reader blocked in
``XREADGROUP`` on a stream of its own, which notes its clock the moment an ``XADD`` wakes it — no
record, no claim, no process. It is the floor for any Redis-stream dispatcher written in Python on
this machine, under the same noise.

Every wait is bounded (``--timeout-secs``); workers are stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tinytown.config import load_config  # noqa: E402
from tinytown.connection.embedded import EmbeddedServer, find_server_binary  # noqa: E402
from tinytown.core.clock import parse_rfc3339  # noqa: E402
from tinytown.store import Town  # noqa: E402

RQ_QUEUE = "tt-bench"
FLOOR_STREAM = "tt-bench-floor"
RQ_JOB = "bench_dispatch.run_true"  # by name: the RQ worker imports it from bench/
POLL_SECS = 0.001


def run_true() -> None:
    """The RQ job: start one no-op process, like agent_worker's CLI `true`.

    It notes its clock just before the process starts (the point agent_worker's ``started_at``
    marks) and stores it in the job's meta afterwards, off the measured path.
    """
    from rq import get_current_job

    spawn_at = time.time()
    subprocess.run(["true"], check=True)
    job = get_current_job()
    if job is not None:
        job.meta["spawn_at"] = spawn_at
        job.save_meta()


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


def floor_latency(r, timeout: float) -> tuple[float, float]:
    """(XADD → the bare reader's wake-up, 0) in seconds."""
    submitted = time.time()
    n = repr(submitted)
    r.xadd(FLOOR_STREAM, {"n": n})
    woke = wait_for(lambda: r.get(f"{FLOOR_STREAM}:{n}"), timeout, "the floor reader")
    return float(woke) - submitted, 0.0


def start_rq_worker(url: str, n: int, log_dir: Path) -> subprocess.Popen:
    code = (
        "import redis, rq; from rq.worker import SimpleWorker;"
        f"r = redis.Redis.from_url({url!r});"
        f"SimpleWorker([rq.Queue({RQ_QUEUE!r}, connection=r)], connection=r, name='rq-bench-{n}')"
        ".work(logging_level='WARNING')"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent)}
    with open(log_dir / f"rq-worker-{n}.log", "w") as log:
        return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=log, stderr=log)


def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(POLL_SECS)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


def wait_tt_idle(town: Town, count: int, timeout: float) -> None:
    wait_for(
        lambda: town.agents.counts().live["idle"] >= count, timeout, f"{count} idle agent_worker(s)"
    )


def wait_rq_idle(r, count: int, timeout: float) -> None:
    from rq import Worker

    wait_for(
        lambda: sum(1 for w in Worker.all(connection=r) if w.get_state() == "idle") >= count,
        timeout,
        f"{count} idle RQ worker(s)",
    )


# -- measurements ------------------------------------------------------------------------------


def tt_latency(town: Town, timeout: float) -> tuple[float, float]:
    """(submit→started_at, created_at→started_at) in seconds."""
    submitted = time.time()
    task = town.tasks.add("noop")
    done = wait_for(lambda: (t := town.tasks.find(task.id)) and t.terminal and t, timeout, "a task")
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
    wait_for(lambda: town.tasks.counts()["completed"] >= before + n, timeout, f"{n} tasks")
    last = max(parse_rfc3339(t.completed_at).timestamp() for t in town.tasks.many(ids))
    return n / (last - start)


def rq_throughput(queue, n: int, timeout: float) -> float:
    from rq.registry import FinishedJobRegistry

    registry = FinishedJobRegistry(queue=queue)
    before = registry.count
    start = time.time()
    jobs = [queue.enqueue(RQ_JOB) for _ in range(n)]
    wait_for(lambda: registry.count >= before + n, timeout, f"{n} RQ jobs")
    for j in jobs:
        j.refresh()
    last = max(j.ended_at.replace(tzinfo=UTC).timestamp() for j in jobs)
    return n / (last - start)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=200, help="latency samples per system")
    parser.add_argument("--tasks", type=int, default=300, help="tasks per throughput run")
    parser.add_argument("--timeout-secs", type=float, default=60.0, help="bound on every wait")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    parser.add_argument(
        "--floor", action="store_true", help="also measure a bare XREADGROUP reader (the floor)"
    )
    args = parser.parse_args()
    import redis
    from rq import Queue

    root = Path(tempfile.mkdtemp(prefix="ttb-", dir="/tmp"))
    town = make_town(root)
    server = EmbeddedServer(town.config)
    url = server.target.url
    r = redis.Redis.from_url(url)
    queue = Queue(RQ_QUEUE, connection=r)
    procs: list[subprocess.Popen] = []
    try:
        procs += [start_tt_worker(root, 1, root), start_rq_worker(url, 1, root)]
        systems = [("agent_worker", tt_latency, town), ("rq", rq_latency, queue)]
        if args.floor:
            procs.append(start_floor_reader(url))
            systems.append(("floor", floor_latency, r))
        wait_tt_idle(town, 1, args.timeout_secs)
        wait_rq_idle(r, 1, args.timeout_secs)
        for _ in range(5):  # warm-up, not recorded
            for _, measure, target in systems:
                measure(target, args.timeout_secs)
        lat = {name: [] for name, _, _ in systems}
        rec = {name: [] for name, _, _ in systems}
        for _ in range(args.samples):  # alternate, so all see the same machine noise
            for name, measure, target in systems:
                total, reference = measure(target, args.timeout_secs)
                lat[name].append(total)
                rec[name].append(reference)
            time.sleep(0.002)
        thr = {"agent_worker": {}, "rq": {}}
        thr["agent_worker"][1] = tt_throughput(town, args.tasks, args.timeout_secs)
        thr["rq"][1] = rq_throughput(queue, args.tasks, args.timeout_secs)
        procs += [start_tt_worker(root, 2, root), start_rq_worker(url, 2, root)]
        wait_tt_idle(town, 2, args.timeout_secs)
        wait_rq_idle(r, 2, args.timeout_secs)
        thr["agent_worker"][2] = tt_throughput(town, args.tasks, args.timeout_secs)
        thr["rq"][2] = rq_throughput(queue, args.tasks, args.timeout_secs)
    finally:
        if args.floor:
            r.xadd(FLOOR_STREAM, {"stop": "1"})
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        server.stop()
        shutil.rmtree(root, ignore_errors=True)

    ms = {k: [v * 1000 for v in vals] for k, vals in lat.items()}
    rec_ms = {k: [v * 1000 for v in vals] for k, vals in rec.items()}
    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "redis": f"embedded {find_server_binary().flavour} {find_server_binary().version_text}"
        f" on {server.target.display}",
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "samples": args.samples,
        "tasks": args.tasks,
        "latency_ms": {
            k: {
                "p50": round(statistics.median(v), 3),
                "p99": round(pct(v, 99), 3),
                "min": round(min(v), 3),
            }
            for k, v in ms.items()
        },
        # agent_worker: created_at → started_at; RQ: submit → its own started_at
        # (before the job runs)
        "reference_ms": {
            k: {"p50": round(statistics.median(v), 3), "p99": round(pct(v, 99), 3)}
            for k, v in rec_ms.items()
            if k != "floor"
        },
        "throughput_tasks_per_sec": {
            k: {str(w): round(x, 1) for w, x in v.items()} for k, v in thr.items()
        },
    }
    result["p50_ratio_rq_over_agent_worker"] = round(
        result["latency_ms"]["rq"]["p50"] / result["latency_ms"]["agent_worker"]["p50"], 2
    )
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    lm, tp = result["latency_ms"], result["throughput_tasks_per_sec"]
    print(f"{result['when']}  {result['cpus']} CPUs  Python {result['python']}  {result['redis']}")
    print(f"{'':14}{'p50 ms':>9}{'p99 ms':>9}{'1 worker/s':>12}{'2 workers/s':>13}")
    for k in ("agent_worker", "rq"):
        print(
            f"{k:14}{lm[k]['p50']:>9.3f}{lm[k]['p99']:>9.3f}{tp[k]['1']:>12.1f}{tp[k]['2']:>13.1f}"
        )
    print(f"RQ p50 / agent_worker p50 = {result['p50_ratio_rq_over_agent_worker']}x")
    if "floor" in lm:
        print(
            f"{'floor':14}{lm['floor']['p50']:>9.3f}{lm['floor']['p99']:>9.3f}"
            "   (bare XADD → XREADGROUP wake-up)"
        )
    rm = result["reference_ms"]
    print(
        f"also: agent_worker created_at→started_at p50 {rm['agent_worker']['p50']:.3f} ms; "
        f"RQ submit→its own started_at p50 {rm['rq']['p50']:.3f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
