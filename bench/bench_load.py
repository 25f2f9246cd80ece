#!/usr/bin/env python3
"""Fixed-rate load on townhall: reads and writes for a minute, alone and beside 20 stalled
connections.

    .venv/bin/python bench/bench_load.py [--rate 100] [--seconds 60] [--stalled 20] [--json]

A private redis-server, townhall under gunicorn (2 workers, an API key: the verification cache
is part of every request), and an open-loop load: requests are *scheduled* at ``--rate`` per
second whatever the answers do, and each latency counts from its scheduled moment, so a server
that falls behind shows it (no coordinated omission). The mix, in turn: ``GET /v1/status``,
``GET /api/scaling``, ``GET /v1/tasks?limit=20``, ``GET /v1/tasks/{id}``, ``POST /v1/backlog``
(a write), ``POST /v1/tasks/{id}/cancel`` (a write) — a third of the requests write.

Two phases of ``--seconds`` each: **alone**, then **stalled**: the same load while ``--stalled``
connections each send half a request and then nothing (as a slow or hostile client does). The
target (issue 16): zero errors in both, p50 and p99 recorded. Every process is stopped by PID.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import queue
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_api import free_port, redis_server, stop, wait_http  # noqa: E402

CLIENT_THREADS = 16  # enough to keep up with the schedule while the server is slow


def mix(task_ids: list[str], n: int) -> tuple[str, str, dict | None]:
    """The ``n``-th request of the mix."""
    tid = task_ids[n % len(task_ids)]
    return [
        ("GET", "/v1/status", None),
        ("GET", "/api/scaling", None),
        ("GET", "/v1/tasks?limit=20", None),
        ("GET", f"/v1/tasks/{tid}", None),
        ("POST", "/v1/backlog", {"description": f"load {n}"}),
        ("POST", f"/v1/tasks/{tid}/cancel", {"reason": "load"}),
    ][n % 6]


def run_load(port: int, key: str, task_ids: list[str], rate: float, seconds: float) -> dict:
    """Open loop: request ``n`` is due at start + n / rate; latency counts from that moment."""
    due: queue.Queue = queue.Queue()
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while (item := due.get()) is not None:
            n, at = item
            method, path, body = mix(task_ids, n)
            time.sleep(max(0.0, at - time.perf_counter()))
            try:
                conn.request(method, path, body=json.dumps(body) if body else None, headers=headers)
                resp = conn.getresponse()
                resp.read()
                ok = resp.status < 500 and resp.status not in (401, 403, 429)
                problem = None if ok else f"{method} {path}: {resp.status}"
            except OSError as err:
                problem = f"{method} {path}: {type(err).__name__}: {err}"
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            took = time.perf_counter() - at
            with lock:
                (errors.append(problem) if problem else latencies.append(took))
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(CLIENT_THREADS)]
    for t in threads:
        t.start()
    start = time.perf_counter() + 0.1
    total = int(rate * seconds)
    for n in range(total):
        due.put((n, start + n / rate))
    for _ in threads:
        due.put(None)
    for t in threads:
        t.join()
    latencies.sort()
    return {
        "requests": total,
        "errors": len(errors),
        "first_errors": errors[:5],
        "achieved_rate": round(total / (time.perf_counter() - start), 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 2) if latencies else None,
        "p99_ms": round(latencies[int(0.99 * (len(latencies) - 1))] * 1000, 2)
        if latencies
        else None,
        "max_ms": round(latencies[-1] * 1000, 2) if latencies else None,
    }


def stall(port: int, count: int) -> list[socket.socket]:
    """``count`` connections that send half a request and then nothing."""
    held = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n")  # no blank line: never complete
        held.append(s)
    return held


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=100.0, help="requests a second (default 100)")
    ap.add_argument("--seconds", type=float, default=60.0, help="per phase (default 60)")
    ap.add_argument("--stalled", type=int, default=20, help="stalled connections (default 20)")
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    args = ap.parse_args()

    from tinytown.config import load_config
    from tinytown.core.apikeys import generate_key, hash_key
    from tinytown.store import Town

    tmp = Path(tempfile.mkdtemp(prefix="tt-bench-load-"))
    port = free_port()
    redis_proc, url = redis_server(tmp, tcp=True)
    townhall = None
    out: dict = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}}
    try:
        town_dir = tmp / "town"
        town_dir.mkdir()
        key = generate_key()
        (town_dir / "tinytown.toml").write_text(
            f'name = "load"\n[redis]\nurl = "{url}"\n[townhall]\nrest_port = {port}\n'
            'workers = 2\n[townhall.auth]\nmode = "api_key"\n[[townhall.auth.keys]]\n'
            f'name = "load"\nhash = "{hash_key(key)}"\n'
        )
        town = Town.connect(load_config(town_dir, env={}))
        task_ids = [town.tasks.add(f"seed {i}").id for i in range(50)]
        with open(tmp / "townhall.log", "w") as log:
            townhall = subprocess.Popen(
                [str(BIN / "gunicorn"), "-c", "python:tinytown.gunicorn_conf", "townhall:app",
                 "--access-logfile", "/dev/null"],
                cwd=town_dir, env={**os.environ, "TINYTOWN_TOWN_DIR": str(town_dir)},
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        wait_http(port, "/health")
        run_load(port, key, task_ids, args.rate, 2)  # warm up (and fill the key cache)
        out["alone"] = run_load(port, key, task_ids, args.rate, args.seconds)
        held = stall(port, args.stalled)
        try:
            out["stalled"] = run_load(port, key, task_ids, args.rate, args.seconds)
            out["stalled"]["stalled_connections"] = args.stalled
        finally:
            for s in held:
                s.close()
    finally:
        if townhall is not None:
            stop(townhall)
        stop(redis_proc)
        shutil.rmtree(tmp, ignore_errors=True)

    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"machine: {out['machine']['cpus']} CPUs, Python {out['machine']['python']}")
    print(f"{args.rate:g} requests/s for {args.seconds:g} s per phase, a third of them writes")
    print(f"{'phase':28} {'requests':>8} {'errors':>6} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7}")
    for phase, title in (("alone", "alone"), ("stalled", f"{args.stalled} stalled connections")):
        r = out[phase]
        print(
            f"{title:28} {r['requests']:8d} {r['errors']:6d} {r['achieved_rate']:7.1f} "
            f"{r['p50_ms']:7.2f} {r['p99_ms']:7.2f}"
        )
        for line in r["first_errors"]:
            print(f"    {line}")
    return 1 if out["alone"]["errors"] or out["stalled"]["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
