"""Every benchmark under ``bench/``, how to run it in full and quickly, and one run of it.

Each benchmark is a script ``bench/bench_<name>.py`` that prints its own tables and writes its
numbers to ``--json-file`` (a script that only has ``--json`` is run with it, its document read
from stdout and printed). ``python -m bench`` (``__main__.py``) runs the ones asked for, one
subprocess each, and gathers those documents into one JSON file per run. A new script needs an
entry here: ``tests/test_bench_runner.py`` fails until it has one.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
BASELINE = "{baseline}"  # replaced by the runner's --baseline (default: this checkout)
QUICK_TIMEOUT_SECS = 900
FULL_TIMEOUT_SECS = 3600
INTERRUPT_WAIT_SECS = 60  # after a timeout's SIGINT, before SIGKILL
NO_ENGINE = "unix:///nonexistent/tinytown-bench-no-docker.sock"  # DOCKER_HOST for --skip-docker


@dataclass(frozen=True)
class Benchmark:
    """One script: what it answers, its arguments for a full and a quick (smoke) run."""

    name: str
    about: str
    full: tuple[str, ...]
    quick: tuple[str, ...]
    needs_docker: bool = False
    json_flag: str = "--json-file"  # or "--json": the document on stdout instead of tables

    @property
    def script(self) -> Path:
        return BENCH_DIR / f"bench_{self.name}.py"

    def argv(self, quick: bool, baseline: Path) -> list[str]:
        args = self.quick if quick else self.full
        return [sys.executable, str(self.script)] + [
            str(baseline) if a == BASELINE else a for a in args
        ]


BENCHMARKS = (
    Benchmark(
        "dispatch",
        "submit→start p50/p99 and throughput: agent_worker, RQ (simple, fork), Celery, "
        "Dramatiq, floor",
        full=("--samples", "200", "--tasks", "300", "--rounds", "3"),
        quick=("--samples", "20", "--tasks", "50", "--rounds", "1"),
    ),
    Benchmark(
        "dispatch_ab",
        "submit→start of this checkout against --baseline (default itself: an A/A run, the noise)",
        full=("--baseline", BASELINE, "--samples", "300", "--rounds", "3"),
        quick=("--baseline", BASELINE, "--samples", "20", "--rounds", "1"),
    ),
    Benchmark(
        "api",
        "townhall's /api/scaling and /v1/status against a bare Flask ceiling; queue growth",
        full=("--seconds", "4", "--rounds", "3"),
        quick=("--seconds", "0.5", "--rounds", "1", "--max-tasks", "1000", "--settle-secs", "0.2"),
    ),
    Benchmark(
        "missions",
        "mission item hand-off and per-item cost against submitting by hand",
        full=("--items", "20", "--rounds", "3"),
        quick=("--items", "5", "--rounds", "1"),
    ),
    Benchmark(
        "mcp",
        "MCP over HTTP against REST reads of the same size",
        full=("--seconds", "3", "--rounds", "3"),
        quick=("--seconds", "0.5", "--rounds", "1"),
    ),
    Benchmark(
        "idle",
        "Redis commands a minute from an idle town and per idle worker",
        full=("--minutes", "5", "--warmup-secs", "75"),
        quick=("--minutes", "0.25", "--warmup-secs", "3"),
    ),
    Benchmark(
        "scaler",
        "scale from zero and back to zero with the scaler's loop (Docker)",
        full=("--rounds", "6"),
        quick=("--rounds", "1", "--modes", "longpoll"),
        needs_docker=True,
    ),
    Benchmark(
        "auth_timing",
        "wrong API keys of every shape, timed side by side through townhall",
        full=("--requests", "100", "--keys", "2"),
        quick=("--requests", "10", "--keys", "2"),
        json_flag="--json",
    ),
    Benchmark(
        "memory",
        "PSS and RSS of townhall (2 gunicorn workers) and an idle agent worker",
        full=("--workers", "2", "--settle-secs", "10"),
        quick=("--workers", "2", "--settle-secs", "2"),
        json_flag="--json",
    ),
    Benchmark(
        "chaos",
        "workers SIGKILLed at random while tasks flow: nothing lost, duplicates bounded",
        full=("--tasks", "2000", "--workers", "4"),
        quick=("--tasks", "200", "--workers", "2", "--kill-every", "1,2"),
    ),
    Benchmark(
        "load",
        "fixed-rate reads and writes on townhall, alone and beside stalled connections",
        full=("--rate", "100", "--seconds", "60", "--stalled", "20"),
        quick=("--rate", "50", "--seconds", "3", "--stalled", "5"),
        json_flag="--json",
    ),
)


def by_name() -> dict[str, Benchmark]:
    return {b.name: b for b in BENCHMARKS}


def docker_engine_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


def machine() -> dict:
    """CPU model, cores, kernel, Python and the redis-server on PATH, for the run's record."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        redis = subprocess.run(
            ["redis-server", "--version"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        redis = "no redis-server on PATH"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "redis": redis,
    }


def run(bench: Benchmark, quick: bool, baseline: Path, env: dict[str, str]) -> dict:
    """Run one benchmark as a subprocess (its output goes straight to this terminal) and return
    its record: status ``ok`` or ``failed`` (with the reason), seconds, argv, and its JSON."""
    with tempfile.TemporaryDirectory(prefix="tt-bench-run-") as tmp:
        json_file = Path(tmp) / "result.json"
        argv = bench.argv(quick, baseline)
        if bench.json_flag == "--json-file":
            argv += ["--json-file", str(json_file)]
            stdout = None
        else:
            argv.append(bench.json_flag)
            stdout = json_file.open("w")
        record: dict = {"argv": argv[1:]}
        timeout = QUICK_TIMEOUT_SECS if quick else FULL_TIMEOUT_SECS
        started = time.monotonic()
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=stdout)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = None
            proc.send_signal(signal.SIGINT)  # the scripts clean up in `finally` on SIGINT
            try:
                proc.wait(timeout=INTERRUPT_WAIT_SECS)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        record["seconds"] = round(time.monotonic() - started, 1)
        if stdout is not None:
            stdout.close()
            print(json_file.read_text(), end="", flush=True)
        if code is None:
            record.update(status="failed", reason=f"timed out after {timeout} s")
        elif code != 0:
            record.update(status="failed", reason=f"exit code {code}")
        elif not json_file.exists() or not json_file.read_text().strip():
            record.update(status="failed", reason=f"exited 0 but wrote nothing ({bench.json_flag})")
        else:
            try:
                record.update(status="ok", result=json.loads(json_file.read_text()))
            except ValueError as e:
                record.update(status="failed", reason=f"its {bench.json_flag} is not JSON: {e}")
    return record
