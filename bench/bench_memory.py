#!/usr/bin/env python3
"""Memory: townhall (gunicorn master and its workers) and an idle agent worker, as PSS and RSS.

    .venv/bin/python bench/bench_memory.py [--workers 2] [--settle-secs 10] [--json]

PSS (proportional set size, /proc/PID/smaps_rollup) counts a page shared by N processes as 1/N
in each, so summing it over townhall's processes counts shared pages once; RSS counts them in
every process. Everything the product serves is loaded first: the status page, an MCP
``tools/list``, an A2A card, a mission, the event feed and ``/api/scaling`` are each requested
through every gunicorn worker before measuring. Targets (issue 16): townhall with 2 workers
<= 80 MB PSS, an idle worker <= 30 MB PSS. A private redis-server serves the town; every process
is stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_api import free_port, redis_server, stop, wait_http  # noqa: E402

WARM_UP = (
    ("GET", "/", None),
    ("GET", "/api/scaling", None),
    ("GET", "/v1/status", None),
    ("GET", "/v1/events?wait=0", None),
    ("GET", "/.well-known/agent-card.json", None),
    ("POST", "/mcp", {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
    ("POST", "/v1/missions", {"items": [{"key": "a", "title": "warm up"}]}),
)


def kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for pid {pid}")


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def measure(pids: list[int]) -> dict:
    pss = sum(kib(p, "Pss") for p in pids)
    rss = sum(kib(p, "Rss") for p in pids)
    return {"processes": len(pids), "pss_mb": round(pss / 1024, 1), "rss_mb": round(rss / 1024, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    ap.add_argument("--settle-secs", type=float, default=10.0, help="before measuring")
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="tt-bench-mem-"))
    port = free_port()
    procs: list[subprocess.Popen] = []
    redis_proc, url = redis_server(tmp, tcp=True)
    out: dict = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}}
    try:
        town = tmp / "town"
        town.mkdir()
        (town / "tinytown.toml").write_text(
            f'name = "mem"\ndefault_cli = "noop"\n\n[redis]\nurl = "{url}"\n\n'
            f"[townhall]\nrest_port = {port}\nworkers = {args.workers}\n\n"
            '[agent]\nidle_timeout_secs = 0\n\n[agent_clis.noop]\ncommand = "true"\n'
        )
        env = {**os.environ, "TINYTOWN_TOWN_DIR": str(town)}
        with open(tmp / "townhall.log", "w") as log:
            townhall = subprocess.Popen(
                [str(BIN / "gunicorn"), "-c", "python:tinytown.gunicorn_conf", "townhall:app"],
                cwd=town, env=env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        procs.append(townhall)
        wait_http(port, "/health")
        with open(tmp / "worker.log", "w") as log:
            worker = subprocess.Popen(
                [sys.executable, str(ROOT / "agent_worker.py"), "--town", str(town)],
                env={**env, "TINYTOWN_AGENT_NAME": "mem-worker"},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        procs.append(worker)
        # every route family through every gunicorn worker (new connections spread over them)
        for _ in range(4 * args.workers):
            for method, path, body in WARM_UP:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                data = json.dumps(body) if body else None
                headers = {"Content-Type": "application/json"} if body else {}
                conn.request(method, path, body=data, headers=headers)
                conn.getresponse().read()
                conn.close()
        time.sleep(args.settle_secs)
        out["townhall"] = measure([townhall.pid, *children(townhall.pid)])
        out["idle_worker"] = measure([worker.pid])
    finally:
        for proc in reversed(procs):
            stop(proc)
        stop(redis_proc)
        shutil.rmtree(tmp, ignore_errors=True)

    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    t, w = out["townhall"], out["idle_worker"]
    print(f"machine: {out['machine']['cpus']} CPUs, Python {out['machine']['python']}")
    print(
        f"townhall ({t['processes']} processes: master + {args.workers} workers): "
        f"PSS {t['pss_mb']} MB, RSS {t['rss_mb']} MB (target PSS <= 80 MB)"
    )
    print(f"idle worker: PSS {w['pss_mb']} MB, RSS {w['rss_mb']} MB (target PSS <= 30 MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
