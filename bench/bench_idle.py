#!/usr/bin/env python3
"""Idle cost: Redis commands a minute from a town with nothing to do, by ``INFO commandstats``.

    .venv/bin/python bench/bench_idle.py [--minutes 5] [--warmup-secs 75] [--workers 1] [--json]

A private redis-server (TCP on loopback, no persistence) serves one town. Two phases, each
measured as the delta of ``INFO commandstats`` over ``--minutes`` after ``--warmup-secs``:

1. **idle town**: townhall (gunicorn, 2 workers, default settings: keeper, mission dispatcher,
   sampler, event pump) and ``scaler.py run`` long-polling its signal (Docker outposts as
   configured by default; with no engine the scaler's passes fail at Docker, which costs Redis
   nothing either way, and the output says which), no worker. Target (issues 15, 16): <= 10/min.
2. **idle workers**: the same plus ``--workers`` idle ``agent_worker.py`` processes (CLI
   ``true``, no idle exit); the difference from phase 1, per worker. Target (issue 16):
   <= 30/min per idle worker.

The warm-up outlasts townhall's sampler interval (60 s): the workers' registration is an event,
and the sample that follows it within a minute (about 22 commands) is a cost of that change, not
of idling; with a shorter warm-up it lands in the window about two runs in three and adds ~4 a
minute to "per idle worker". A quiet town samples at most every 30 minutes.

Each phase prints its commands per minute and the ten biggest sources. The measuring
connection's own ``INFO`` calls are subtracted. Every process is stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
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


def calls(r) -> dict[str, int]:
    return {k.removeprefix("cmdstat_"): v["calls"] for k, v in r.info("commandstats").items()}


def measure(r, minutes: float) -> dict:
    before = calls(r)
    time.sleep(minutes * 60)
    after = calls(r)
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    delta["info"] = delta.get("info", 0) - 1  # the second INFO is ours
    delta = {k: v for k, v in delta.items() if v > 0}
    total = sum(delta.values())
    return {
        "minutes": minutes,
        "per_minute": total / minutes,
        "by_command_per_minute": {
            k: round(v / minutes, 1) for k, v in sorted(delta.items(), key=lambda kv: -kv[1])
        },
    }


def spawn(args: list[str], cwd: Path, log: Path, env: dict | None = None) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(
            args,
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def docker_up() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=5.0, help="per phase (default 5)")
    ap.add_argument(
        "--warmup-secs",
        type=float,
        default=75.0,
        help="before each (default 75: past the sample that follows the workers' registration)",
    )
    ap.add_argument("--workers", type=int, default=1, help="idle workers in phase 2 (default 1)")
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    ap.add_argument("--json-file", type=Path, help="also write the JSON document here")
    args = ap.parse_args()

    import redis

    tmp = Path(tempfile.mkdtemp(prefix="tt-bench-idle-"))
    procs: list[subprocess.Popen] = []
    redis_proc, url = redis_server(tmp, tcp=True)
    out: dict = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}}
    r = redis.Redis.from_url(url)
    try:
        out["machine"]["redis"] = r.info("server")["redis_version"]
        out["machine"]["docker"] = docker_up()
        town_dir = tmp / "town"
        town_dir.mkdir()
        port = free_port()
        (town_dir / "tinytown.toml").write_text(
            f'name = "idle"\ndefault_cli = "noop"\n\n[redis]\nurl = "{url}"\n\n'
            f"[townhall]\nrest_port = {port}\nworkers = 2\n\n"
            "[agent]\nidle_timeout_secs = 0\n\n"
            '[agent_clis.noop]\ncommand = "true"\n'
        )
        env = {"TINYTOWN_TOWN_DIR": str(town_dir)}
        env.update({k: "" for k in os.environ if k.startswith("TINYTOWN_SCALER_")})
        gunicorn = [str(BIN / "gunicorn"), "-c", "python:tinytown.gunicorn_conf", "townhall:app"]
        procs.append(spawn(gunicorn, town_dir, tmp / "townhall.log", env))
        wait_http(port, "/health")
        scaler = [
            sys.executable, str(ROOT / "scaler.py"), "run", "--url", f"http://127.0.0.1:{port}",
            "--image", "tinytown-agent-worker:idle-bench", "--state-file", str(tmp / "scaler.json"),
        ]  # fmt: skip
        procs.append(spawn(scaler, town_dir, tmp / "scaler.log"))

        time.sleep(args.warmup_secs)
        out["idle_town"] = measure(r, args.minutes)

        for n in range(args.workers):
            worker = [sys.executable, str(ROOT / "agent_worker.py"), "--town", str(town_dir)]
            procs.append(
                spawn(worker, town_dir, tmp / f"worker-{n}.log", {"TINYTOWN_AGENT_NAME": f"w{n}"})
            )
        time.sleep(args.warmup_secs)
        with_workers = measure(r, args.minutes)
        out["idle_workers"] = with_workers
        out["per_idle_worker_per_minute"] = (
            with_workers["per_minute"] - out["idle_town"]["per_minute"]
        ) / max(1, args.workers)
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(procs):
            stop(proc)
        stop(redis_proc)
        shutil.rmtree(tmp, ignore_errors=True)

    if args.json_file:
        args.json_file.write_text(json.dumps(out, indent=2))
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    m = out["machine"]
    print(
        f"machine: {m['cpus']} CPUs, Python {m['python']}, Redis {m['redis']}; "
        f"Docker engine {'up' if m['docker'] else 'down (scaler passes stop at Docker)'}"
    )
    for phase, title in (("idle_town", "idle town"), ("idle_workers", "with idle workers")):
        p = out[phase]
        top = ", ".join(f"{k} {v:g}" for k, v in list(p["by_command_per_minute"].items())[:10])
        print(f"{title:18} {p['per_minute']:7.1f} commands/min over {p['minutes']:g} min: {top}")
    print(f"{'per idle worker':18} {out['per_idle_worker_per_minute']:7.1f} commands/min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
