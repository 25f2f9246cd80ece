"""Scaler benchmark: how long a task waits when no worker runs, and how long workers outlive the
last task, with ``python scaler.py`` in its loop — long-polling townhall's signal (``longpoll``,
the default) and polling it every ``--interval-secs`` (``poll``: ``--signal-wait-secs 0``),
round by round in one run.

    .venv/bin/python bench/bench_scaler.py [--rounds 6] [--modes longpoll,poll]
        [--interval-secs 2] [--idle-timeout-secs 5]

Everything is real and local: the project's managed Redis over TCP, townhall under gunicorn, the
agent-worker image built from the Dockerfile (``tests/docker_support.py``; needs the engine and
base image of ``bash .ci/docker-engine.sh``), worker containers on host networking, and the
scaler as a separate process in its loop mode. Each round starts from zero worker containers,
waits a random part of an interval (so submissions fall anywhere in the scaler's cycle), submits
``--tasks`` tasks at once (the fake coding CLI sleeps ``--task-secs``), and measures:

- ``scale_from_zero``: the first task's ``created_at`` → its ``started_at`` (both written by
  this host's clock), split into ``wait_for_pass`` (submission → its worker container started,
  Docker's ``State.StartedAt``) and ``worker_boot`` (container started → task taken);
- ``to_zero_live``: the last task's ``completed_at`` → no container of the town running (the
  workers' own idle exit: about ``--idle-timeout-secs``);
- ``to_zero_containers``: the same → no container left at all (the scaler removes exited ones
  with ``keep_exited = 0``, on its next pass).

The scaler is restarted for each round in the round's mode. Prints one JSON line per round,
then p50 and max of each per mode; the target (issue 15) is scale from zero p50 <= 0.6 s and
max <= 1.0 s. Bounded: ``--round-timeout-secs`` per
round. Containers are removed by their town label at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import docker  # noqa: E402
import docker.errors  # noqa: E402

from tests.docker_support import build_image  # noqa: E402
from tests.scaler_stack import SCALER, ScalerTown, TcpRedis  # noqa: E402
from tests.worker_support import poll as wait_for  # noqa: E402
from tinytown.core.clock import parse_rfc3339  # noqa: E402

IMAGE = f"tinytown-agent-worker:bench-{os.getpid()}"
POLL_SECS = 0.05


def epoch(text: str) -> float:
    return parse_rfc3339(text).timestamp()


def docker_time(text: str) -> float:
    """Docker's ``2026-11-23T12:00:00.123456789Z`` (nanoseconds) as epoch seconds."""
    head, _, frac = text.rstrip("Z").partition(".")
    base = datetime.fromisoformat(head + "+00:00").timestamp()
    return base + (float("0." + frac) if frac else 0.0)


def machine() -> dict:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    client = docker.from_env()
    try:
        version = client.version()
        engine = f"{version['Version']} ({client.info()['Driver']})"
    finally:
        client.close()
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "docker": engine,
    }


def one_round(town: ScalerTown, client, args) -> dict:
    wait_for(
        lambda: not town.containers(client),
        timeout=args.round_timeout_secs,
        interval=POLL_SECS,
        message="zero containers before the round",
    )
    time.sleep(random.uniform(0, args.interval_secs))  # land anywhere in the scaler's cycle
    tasks = [
        town.town.tasks.add(f"bench task {i} [sleep {args.task_secs}]") for i in range(args.tasks)
    ]
    first = tasks[0]

    def taken():
        task = town.town.tasks.get(first.id)
        return task if task.started_at else None

    started = wait_for(
        taken,
        timeout=args.round_timeout_secs,
        interval=POLL_SECS,
        message="the first task to start",
    )
    worker = next(
        c
        for c in town.containers(client)
        if c.labels.get("tinytown.agent_id") == started.assigned_to
    )
    container_started = docker_time(worker.attrs["State"]["StartedAt"])

    def all_done():
        found = [town.town.tasks.get(t.id) for t in tasks]
        return found if all(t.state == "completed" for t in found) else None

    done = wait_for(
        all_done,
        timeout=args.round_timeout_secs,
        interval=POLL_SECS,
        message="every task to complete",
    )
    last_done = max(epoch(t.completed_at) for t in done)
    wait_for(
        lambda: not [c for c in town.containers(client) if c.status == "running"],
        timeout=args.round_timeout_secs,
        interval=POLL_SECS,
        message="no running container",
    )
    zero_live = time.time()
    wait_for(
        lambda: not town.containers(client),
        timeout=args.round_timeout_secs,
        interval=POLL_SECS,
        message="no container left",
    )
    zero_all = time.time()
    started = next(
        t for t in done if t.id == first.id
    )  # its final started_at: when the CLI started
    created = epoch(started.created_at)
    return {
        "scale_from_zero": round(epoch(started.started_at) - created, 3),
        "wait_for_pass": round(container_started - created, 3),
        "worker_boot": round(epoch(started.started_at) - container_started, 3),
        "to_zero_live": round(zero_live - last_done, 3),
        "to_zero_containers": round(zero_all - last_done, 3),
    }


MODES = {"longpoll": 25, "poll": 0}  # --signal-wait-secs of each mode


def start_loop(town: ScalerTown, args, mode: str, log) -> subprocess.Popen:
    """``python scaler.py`` in its loop, long-polling townhall's signal or polling every
    ``--interval-secs``; returns once its first pass has run (its first JSON line)."""
    settings = town.cli_args(
        interval_secs=args.interval_secs, keep_exited=0, signal_wait_secs=MODES[mode]
    )
    loop = subprocess.Popen(
        [sys.executable, str(SCALER), "--json", *settings],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("TINYTOWN_SCALER_")},
    )
    first = loop.stdout.readline()  # one JSON line per pass
    if not first:
        raise RuntimeError(f"the scaler loop ({mode}) exited before its first pass")
    threading.Thread(target=loop.stdout.read, daemon=True).start()  # keep the pipe drained
    return loop


def stop_loop(loop: subprocess.Popen) -> int:
    loop.send_signal(signal.SIGTERM)
    try:
        return loop.wait(timeout=30)
    except subprocess.TimeoutExpired:
        loop.kill()
        return loop.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6, help="rounds per mode (default 6)")
    parser.add_argument(
        "--modes",
        default="longpoll,poll",
        help="comma-separated, interleaved round by round (default longpoll,poll)",
    )
    parser.add_argument("--interval-secs", type=float, default=2.0)
    parser.add_argument("--idle-timeout-secs", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=2, help="tasks submitted per round")
    parser.add_argument("--task-secs", type=float, default=1.0)
    parser.add_argument("--round-timeout-secs", type=float, default=90.0)
    parser.add_argument("--image", help="an agent-worker image already built (default: build one)")
    parser.add_argument(
        "--json-file", type=Path, help="also write machine, rounds and summary here"
    )
    args = parser.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or any(m not in MODES for m in modes):
        parser.error(f"--modes: choose from {', '.join(MODES)}")

    client = docker.from_env(timeout=60)
    image = args.image or IMAGE
    if not args.image:
        started = time.monotonic()
        build_image("agent-worker", IMAGE)
        print(f"# built {IMAGE} in {time.monotonic() - started:.1f} s", file=sys.stderr)
    print(json.dumps({"machine": machine()}))
    root = Path(tempfile.mkdtemp(prefix="bench-scaler-"))
    redis = TcpRedis(root / "redis").start()
    town = ScalerTown(
        root / "town", redis.url, image, {"idle_timeout_secs": args.idle_timeout_secs}
    ).start()
    log = open(root / "scaler.log", "w")
    rows = []
    exit_codes = []
    try:
        for n in range(1, args.rounds + 1):
            for mode in modes:
                loop = start_loop(town, args, mode, log)
                try:
                    row = {"round": n, "mode": mode, **one_round(town, client, args)}
                finally:
                    exit_codes.append(stop_loop(loop))
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        log.close()
        town.stop(client)
        redis.stop()
        if not args.image:
            try:
                client.images.remove(IMAGE, force=True)
            except docker.errors.NotFound:
                pass
    summary = {
        "interval_secs": args.interval_secs,
        "idle_timeout_secs": args.idle_timeout_secs,
        "rounds_per_mode": args.rounds,
        "loop_exit_codes": sorted(set(exit_codes)),
    }
    keys = ("scale_from_zero", "wait_for_pass", "worker_boot", "to_zero_live", "to_zero_containers")
    for mode in modes:
        mine = [r for r in rows if r["mode"] == mode]
        summary[mode] = {
            key: {
                "p50": round(statistics.median(r[key] for r in mine), 3),
                "max": max(r[key] for r in mine),
            }
            for key in keys
        }
    print(json.dumps({"summary": summary}))
    if args.json_file:
        doc = {"machine": machine(), "rounds": rows, "summary": summary}
        args.json_file.write_text(json.dumps(doc, indent=2))
    for mode in modes:
        s = summary[mode]["scale_from_zero"]
        verdict = "meets" if s["p50"] <= 0.6 and s["max"] <= 1.0 else "misses"
        print(
            f"{mode}: scale-from-zero p50 {s['p50']:.2f} s, max {s['max']:.2f} s "
            f"({verdict} the target p50 <= 0.6 s, max <= 1.0 s)",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
