"""Townhall under gunicorn: /api/scaling and /v1/status against a bare Flask + Redis ceiling.

    .venv/bin/python bench/bench_api.py [--seconds 4] [--concurrency 8] [--rounds 3]
        [--max-tasks 1000000]

Everything runs on loopback and stops by PID at the end: a private redis-server (unix socket, no
persistence), townhall (``gunicorn -c python:tinytown.gunicorn_conf townhall:app``, 2 workers)
and the ceiling (the same gunicorn settings serving one Flask route that makes one Redis
pipeline round trip of the same commands ``/api/scaling`` sends). The load generator is
threads in this process, each making requests for a fixed time; every endpoint is measured in
interleaved rounds so machine noise hits them alike, and the median round is reported.

Then ``/api/scaling`` latency with 0, 10 000 and 1 000 000 queued tasks (filled with pipelined
writes of the same shape as ``TaskStore.add``), and the Argon2 verification cache: ``/v1/town``
with an API key, cache on and off.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT))


# --- apps served by gunicorn ------------------------------------------------------------------


def make_ceiling_app():
    """One Flask route, one Redis pipeline round trip (the commands /api/scaling sends),
    JSON out."""
    import redis
    from flask import Flask

    from tinytown.core import defaults
    from tinytown.core.keys import Keys
    from tinytown.core.states import AGENT_STATES, TASK_STATES
    from tinytown.store.scripts import AGENT_COUNTS

    r = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"], decode_responses=True)
    k = Keys(os.environ["BENCH_TOWN"])
    counts = r.register_script(AGENT_COUNTS)
    counts_keys = [k.agents_in_state(state) for state in AGENT_STATES]
    counts_args = [k.agent_prefix, "1", str(AGENT_STATES.index("idle") + 1)]
    r.script_load(AGENT_COUNTS)
    app = Flask("ceiling")

    @app.get("/ceiling")
    def ceiling():
        pipe = r.pipeline(transaction=False)
        for state in TASK_STATES:
            pipe.zcard(k.tasks_in_state(state))
        pipe.evalsha(counts.sha, len(counts_keys), *counts_keys, *counts_args)
        pipe.llen(k.backlog)
        pipe.scard(k.missions_active)
        pipe.xpending(k.docket, defaults.DOCKET_GROUP)
        out = pipe.execute(raise_on_error=False)
        return {"tasks": out[: len(TASK_STATES)], "pending": str(out[-1])}

    return app


def make_townhall_app(cache: bool = True):
    """Townhall itself, optionally without the API-key verification cache."""
    from tinytown.api import create_app
    from tinytown.config import load_config

    return create_app(load_config(), **({} if cache else {"cache_ttl_secs": 0}))


# --- processes --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_server(tmp: Path, *, tcp: bool = False) -> tuple[subprocess.Popen, str]:
    """A private redis-server in ``tmp`` (no persistence), once it answers: its process and URL.
    A unix socket, or with ``tcp`` a loopback port (for what a socket cannot reach)."""
    import redis

    if tcp:
        port = free_port()
        where, url = ["--port", str(port), "--bind", "127.0.0.1"], f"redis://127.0.0.1:{port}/0"
    else:
        sock = tmp / "redis.sock"
        where = ["--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700"]
        url = f"unix://{sock}"
    proc = subprocess.Popen(
        ["redis-server", *where, "--save", "", "--appendonly", "no", "--dir", str(tmp)],
        stdout=subprocess.DEVNULL,
    )
    for _ in range(200):
        try:
            if redis.Redis.from_url(url).ping():
                return proc, url
        except redis.ConnectionError:
            time.sleep(0.05)
    stop(proc)
    raise SystemExit(f"the private redis-server did not answer at {url}")


def wait_http(port: int, path: str, headers: dict | None = None, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path, headers=headers or {})
            if conn.getresponse().status < 500:
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing answered on 127.0.0.1:{port}{path}")


def gunicorn(cwd: Path, app: str, port: int, env: dict, *extra: str) -> subprocess.Popen:
    args = [
        str(BIN / "gunicorn"),
        "-c",
        "python:tinytown.gunicorn_conf",
        "-b",
        f"127.0.0.1:{port}",
        "--access-logfile",
        "/dev/null",
        "--pythonpath",
        str(ROOT / "bench"),
        *extra,
        app,
    ]
    return subprocess.Popen(
        args,
        cwd=cwd,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


# --- load -------------------------------------------------------------------------------------


def load(
    port: int, path: str, seconds: float, concurrency: int, headers: dict | None = None
) -> dict:
    """Closed-loop load: ``concurrency`` threads request for ``seconds``; rps, p50, p99 (ms)."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    def worker():
        mine, bad = [], 0
        while time.perf_counter() < stop_at:
            start = time.perf_counter()
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                conn.request("GET", path, headers=headers or {})
                resp = conn.getresponse()
                resp.read()
                conn.close()
                if resp.status != 200:
                    bad += 1
                    continue
            except OSError:
                bad += 1
                continue
            mine.append(time.perf_counter() - start)
        with lock:
            latencies.extend(mine)
            errors[0] += bad

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    latencies.sort()
    pick = lambda q: (
        latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000
        if latencies
        else float("nan")
    )
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": pick(0.50),
        "p99_ms": pick(0.99),
        "n": len(latencies),
        "errors": errors[0],
    }


def median_round(results: list[dict]) -> dict:
    return sorted(results, key=lambda r: r["rps"])[len(results) // 2]


# --- filling the queue ------------------------------------------------------------------------


def fill(town, target: int, batch: int = 5000) -> float:
    """Queue tasks until ``target`` are pending, with the writes ``TaskStore.add`` makes (its
    ``task_created`` event too: a townhall keeps its signal while the feed is quiet, so writes
    without events would leave it counting the queue from before them)."""
    from tinytown.core import defaults
    from tinytown.core import events as ev
    from tinytown.core.clock import epoch_us, now, to_rfc3339
    from tinytown.core.records import Task, new_id

    k = town.keys
    have = town.redis.zcard(k.tasks_in_state("pending"))
    began = time.perf_counter()
    while have < target:
        n = min(batch, target - have)
        pipe = town.redis.pipeline(transaction=False)
        for _ in range(n):
            created = now()
            ts = to_rfc3339(created)
            task = Task(
                id=new_id(),
                description="benchmark task: no-op",
                created_at=ts,
                updated_at=ts,
                tags=["bench"],
            )
            score = epoch_us(created)
            pipe.hset(k.task(task.id), mapping=task.to_hash())
            pipe.zadd(k.tasks, {task.id: score})
            pipe.zadd(k.tasks_in_state("pending"), {task.id: score})
            pipe.rpush(k.backlog, task.id)
            pipe.xadd(
                k.docket,
                {"task_id": task.id, "type": "task_assign", "message": task.description},
                maxlen=defaults.DOCKET_MAXLEN,
                approximate=True,
            )
            created_event = ev.event(
                ev.TASK_CREATED,
                f"task {task.id} created (pending)",
                ts,
                task_id=task.id,
                new_state="pending",
            )
            for command in town.tasks.events.commands(created_event):
                pipe.execute_command(*command)
        pipe.execute()
        have += n
    return time.perf_counter() - began


# --- the run ----------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--seconds", type=float, default=4.0, help="length of one measurement (default %(default)s)"
    )
    ap.add_argument(
        "--concurrency", type=int, default=8, help="client threads (default %(default)s)"
    )
    ap.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="interleaved rounds per endpoint (default %(default)s)",
    )
    ap.add_argument(
        "--max-tasks",
        type=int,
        default=1_000_000,
        help="largest queue measured (default %(default)s)",
    )
    ap.add_argument(
        "--settle-secs", type=float, default=3.0, help="pause after filling (default %(default)s)"
    )
    ap.add_argument("--json", action="store_true", help="print one JSON document instead of tables")
    ap.add_argument("--json-file", type=Path, help="also write the JSON document here")
    args = ap.parse_args()

    import redis

    from tinytown.config import load_config
    from tinytown.core.apikeys import generate_key, hash_key
    from tinytown.store import Town

    tmp = Path(tempfile.mkdtemp(prefix="tt-bench-"))
    redis_proc, url = redis_server(tmp)
    procs: list[subprocess.Popen] = []
    out: dict = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}}
    try:
        out["machine"]["redis"] = redis.Redis.from_url(url).info("server")["redis_version"]
        town_dir = tmp / "town"
        town_dir.mkdir()
        key = generate_key()
        (town_dir / "tinytown.toml").write_text(
            f'name = "bench"\n[redis]\nurl = "{url}"\n[townhall]\nworkers = 2\n'
        )
        keyed_dir = tmp / "keyed"
        keyed_dir.mkdir()
        (keyed_dir / "tinytown.toml").write_text(
            f'name = "bench"\n[redis]\nurl = "{url}"\n[townhall]\nworkers = 2\n'
            '[townhall.auth]\nmode = "api_key"\n[[townhall.auth.keys]]\nname = "bench"\n'
            f'hash = "{hash_key(key)}"\n'
        )
        town = Town.connect(load_config(town_dir, env={}))
        for i in range(5):
            agent = town.agents.register(f"worker-{i}", "claude")
            town.agents.set_state(agent.id, "ready")
        fill(town, 0)
        from tinytown.store.tasks import ensure_group

        ensure_group(town.redis, town.keys.docket)

        env = {"BENCH_REDIS_URL": url, "BENCH_TOWN": "bench", "TINYTOWN_TOWN_DIR": str(town_dir)}
        p_town, p_ceiling = free_port(), free_port()
        procs.append(gunicorn(town_dir, "townhall:app", p_town, env))
        procs.append(gunicorn(town_dir, "bench_api:make_ceiling_app()", p_ceiling, env))
        wait_http(p_town, "/health")
        wait_http(p_ceiling, "/ceiling")

        # 1. side by side, interleaved
        endpoints = {
            "ceiling (bare Flask, 1 pipeline)": (p_ceiling, "/ceiling"),
            "/api/scaling": (p_town, "/api/scaling"),
            "/v1/status": (p_town, "/v1/status"),
        }
        for port, path in endpoints.values():
            load(port, path, 1.0, args.concurrency)  # warm up
        rounds: dict[str, list[dict]] = {name: [] for name in endpoints}
        for _ in range(args.rounds):
            for name, (port, path) in endpoints.items():
                rounds[name].append(load(port, path, args.seconds, args.concurrency))
        out["side_by_side"] = {name: median_round(r) for name, r in rounds.items()}
        ceiling_rps = out["side_by_side"]["ceiling (bare Flask, 1 pipeline)"]["rps"]
        out["scaling_vs_ceiling"] = out["side_by_side"]["/api/scaling"]["rps"] / ceiling_rps

        # 2. /api/scaling with the queue filled
        out["queue"] = {}
        for size in sorted({0, min(10_000, args.max_tasks), args.max_tasks}):
            fill_secs = fill(town, size)
            time.sleep(
                args.settle_secs
            )  # let Redis finish incremental rehashing of the grown indexes
            sequential = load(p_town, "/api/scaling", args.seconds, 1)
            loaded = median_round(
                [
                    load(p_town, "/api/scaling", args.seconds, args.concurrency)
                    for _ in range(args.rounds)
                ]
            )
            reported = json.loads(_get(p_town, "/api/scaling"))["pending_tasks"]
            out["queue"][size] = {
                "fill_secs": round(fill_secs, 1),
                "p50_ms_1_client": sequential["p50_ms"],
                "p99_ms_1_client": sequential["p99_ms"],
                "rps": loaded["rps"],
                "p50_ms_loaded": loaded["p50_ms"],
                "pending_reported": reported,
            }
        sizes = sorted(out["queue"])
        out["p50_ratio_max_vs_empty"] = (
            out["queue"][sizes[-1]]["p50_ms_1_client"] / out["queue"][0]["p50_ms_1_client"]
        )

        # 3. the Argon2 verification cache
        for proc in procs:
            stop(proc)
        procs.clear()
        out["argon2_cache"] = {}
        for cache in (True, False):
            port = free_port()
            proc = gunicorn(
                keyed_dir,
                f"bench_api:make_townhall_app(cache={cache})",
                port,
                {"TINYTOWN_TOWN_DIR": str(keyed_dir)},
            )
            procs.append(proc)
            headers = {"Authorization": f"Bearer {key}"}
            wait_http(port, "/v1/town", headers)
            load(port, "/v1/town", 1.0, args.concurrency, headers)
            out["argon2_cache"]["on" if cache else "off"] = load(
                port, "/v1/town", args.seconds, args.concurrency, headers
            )
            stop(proc)
            procs.remove(proc)
    finally:
        for proc in procs:
            stop(proc)
        stop(redis_proc)
        shutil.rmtree(tmp, ignore_errors=True)

    if args.json_file:
        args.json_file.write_text(json.dumps(out, indent=2))
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print_tables(out, args)
    return 0


def _get(port: int, path: str) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path)
    return conn.getresponse().read()


def print_tables(out: dict, args) -> None:
    m = out["machine"]
    print(
        f"machine: {m['cpus']} CPUs, Python {m['python']}, Redis {m['redis']}; "
        "gunicorn 2 BufferingWorker (gthread) workers; "
        f"{args.concurrency} client threads, {args.seconds:g} s per measurement, "
        f"median of {args.rounds} rounds\n"
    )
    print("| endpoint | req/s | p50 ms | p99 ms |\n|---|---:|---:|---:|")
    for name, r in out["side_by_side"].items():
        print(f"| {name} | {r['rps']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} |")
    print(f"\n/api/scaling at {out['scaling_vs_ceiling']:.0%} of the ceiling's req/s\n")
    print(
        "| queued tasks | pending reported | p50 ms (1 client) | p99 ms (1 client) "
        "| req/s (loaded) | p50 ms (loaded) |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for size, q in out["queue"].items():
        print(
            f"| {size:,} | {q['pending_reported']:,} | {q['p50_ms_1_client']:.2f} "
            f"| {q['p99_ms_1_client']:.2f} | "
            f"{q['rps']:.0f} | {q['p50_ms_loaded']:.2f} |"
        )
    print(f"\np50 with the largest queue / p50 empty = {out['p50_ratio_max_vs_empty']:.2f}\n")
    print("| /v1/town with an API key | req/s | p50 ms | p99 ms |\n|---|---:|---:|---:|")
    for name, r in out["argon2_cache"].items():
        print(
            f"| verification cache {name} | {r['rps']:.0f} | {r['p50_ms']:.2f} "
            f"| {r['p99_ms']:.2f} |"
        )


if __name__ == "__main__":
    sys.exit(main())
