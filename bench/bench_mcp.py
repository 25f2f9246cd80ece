#!/usr/bin/env python3
"""MCP over HTTP against REST reads of the same size, on one townhall under gunicorn.

    .venv/bin/python bench/bench_mcp.py [--seconds 3] [--rounds 3] [--concurrency 8] [--json]

Issue 14 asks that ``tools/list`` be served as fast as a REST read of similar size. One private
redis-server (unix socket), one townhall (2 gunicorn workers, auth off so both sides pay the
same nothing for it) with 5 agents and enough tasks that ``GET /v1/tasks?limit=N`` returns about
as many bytes as ``tools/list``. Pairs, measured in interleaved rounds (median round reported),
each with one client (latency) and ``--concurrency`` clients (throughput):

- ``tools/list`` (POST /mcp) against ``GET /v1/tasks?limit=N`` (bytes matched);
- ``tools/call task.list`` with the same N against the same REST read (the same operation
  behind both doors: the difference is MCP's envelope);
- ``tools/call town.info`` against ``GET /v1/town`` (small answers: the fixed cost).

Keep-alive connections, loopback; every process is stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_api import free_port, gunicorn, redis_server, stop, wait_http  # noqa: E402

MCP_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}


def rpc(method: str, params: dict | None = None) -> bytes:
    doc = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}}
    return json.dumps(doc).encode()


def request_once(conn: http.client.HTTPConnection, req: tuple) -> bytes:
    method, path, body = req
    conn.request(method, path, body=body, headers=MCP_HEADERS if body else {})
    resp = conn.getresponse()
    data = resp.read()
    if resp.status != 200:
        raise RuntimeError(f"{method} {path} answered {resp.status}: {data[:200]!r}")
    return data


def load(port: int, req: tuple, seconds: float, concurrency: int) -> dict:
    """Closed loop on keep-alive connections: rps, p50 and p99 in ms."""
    latencies: list[float] = []
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    def worker():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        mine = []
        while time.perf_counter() < stop_at:
            start = time.perf_counter()
            request_once(conn, req)
            mine.append(time.perf_counter() - start)
        conn.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    latencies.sort()
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(0.99 * (len(latencies) - 1))] * 1000,
        "n": len(latencies),
    }


def median_round(results: list[dict], key: str) -> dict:
    return sorted(results, key=lambda r: r[key])[len(results) // 2]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="one measurement (default 3)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    ap.add_argument("--concurrency", type=int, default=8, help="clients for rps (default 8)")
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    ap.add_argument("--json-file", type=Path, help="also write the JSON document here")
    args = ap.parse_args()

    from tinytown.config import load_config
    from tinytown.store import Town

    tmp = Path(tempfile.mkdtemp(prefix="tt-bench-mcp-"))
    redis_proc, url = redis_server(tmp)
    townhall = None
    out: dict = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}}
    try:
        town_dir = tmp / "town"
        town_dir.mkdir()
        (town_dir / "tinytown.toml").write_text(
            f'name = "bench"\n[redis]\nurl = "{url}"\n[townhall]\nworkers = 2\n'
        )
        town = Town.connect(load_config(town_dir, env={}))
        for i in range(5):
            town.agents.register(f"worker-{i}", "claude")
        for i in range(300):
            town.tasks.add(f"bench task {i}: make the tests pass in module {i}", tags=["bench"])
        port = free_port()
        townhall = gunicorn(town_dir, "townhall:app", port, {"TINYTOWN_TOWN_DIR": str(town_dir)})
        wait_http(port, "/health")

        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        tools_bytes = len(request_once(conn, ("POST", "/mcp", rpc("tools/list"))))
        per_task = len(request_once(conn, ("GET", "/v1/tasks?limit=100", None))) / 100
        limit = max(1, min(300, round(tools_bytes / per_task)))
        rest_path = f"/v1/tasks?limit={limit}"
        call_tasks = rpc("tools/call", {"name": "task.list", "arguments": {"limit": limit}})
        pairs = {
            "tools/list vs REST read of the same size": (
                ("POST", "/mcp", rpc("tools/list")),
                ("GET", rest_path, None),
            ),
            "tools/call task.list vs GET /v1/tasks (same operation)": (
                ("POST", "/mcp", call_tasks),
                ("GET", rest_path, None),
            ),
            "tools/call town.info vs GET /v1/town (small)": (
                ("POST", "/mcp", rpc("tools/call", {"name": "town.info", "arguments": {}})),
                ("GET", "/v1/town", None),
            ),
        }
        sizes = {
            name: [len(request_once(conn, side)) for side in sides] for name, sides in pairs.items()
        }
        conn.close()
        for sides in pairs.values():
            for side in sides:
                load(port, side, 0.5, args.concurrency)  # warm up
        results: dict = {}
        for name, sides in pairs.items():
            runs = {"mcp": {"1": [], "n": []}, "rest": {"1": [], "n": []}}
            for _ in range(args.rounds):
                for label, side in zip(("mcp", "rest"), sides):
                    runs[label]["1"].append(load(port, side, args.seconds, 1))
                    runs[label]["n"].append(load(port, side, args.seconds, args.concurrency))
            row = {}
            for label in ("mcp", "rest"):
                row[label] = {
                    "bytes": sizes[name][0 if label == "mcp" else 1],
                    "p50_ms": median_round(runs[label]["1"], "p50_ms")["p50_ms"],
                    "p99_ms": median_round(runs[label]["1"], "p50_ms")["p99_ms"],
                    "rps": median_round(runs[label]["n"], "rps")["rps"],
                }
            row["p50_ratio"] = row["mcp"]["p50_ms"] / row["rest"]["p50_ms"]
            row["rps_ratio"] = row["mcp"]["rps"] / row["rest"]["rps"]
            results[name] = row
        out["limit"] = limit
        out["pairs"] = results
    finally:
        if townhall is not None:
            stop(townhall)
        stop(redis_proc)
        shutil.rmtree(tmp, ignore_errors=True)

    if args.json_file:
        args.json_file.write_text(json.dumps(out, indent=2))
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    m = out["machine"]
    print(f"machine: {m['cpus']} CPUs, Python {m['python']}; townhall: 2 gunicorn workers")
    print(f"{args.rounds} interleaved rounds of {args.seconds:g} s; 1 client for latency, "
          f"{args.concurrency} for throughput; medians of the rounds")  # fmt: skip
    print()
    print(f"{'pair':56} {'side':5} {'bytes':>7} {'p50 ms':>7} {'p99 ms':>7} {'req/s':>7}")
    for name, row in out["pairs"].items():
        for label in ("mcp", "rest"):
            r = row[label]
            print(
                f"{name if label == 'mcp' else '':56} {label:5} {r['bytes']:7d} "
                f"{r['p50_ms']:7.2f} {r['p99_ms']:7.2f} {r['rps']:7.0f}"
            )
        print(f"{'':56} ratio MCP/REST: p50 {row['p50_ratio']:.2f}, req/s {row['rps_ratio']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
