"""Helpers for tests that run real ``agent_worker.py`` processes against real Redis.

A worker town is a town directory whose ``default_cli`` is ``fake`` (``tests/fake_cli.py``) and
whose ``[agent]`` intervals are short. :class:`Workers` starts worker subprocesses, reads their
structured log lines, and stops every one of them by PID at teardown.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from .conftest import CONFIG_ENV

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "agent_worker.py"
FAKE_CLI = Path(__file__).resolve().parent / "fake_cli.py"

FAST_AGENT = {
    "idle_timeout_secs": 0,
    "heartbeat_interval_secs": 1,
    "idle_heartbeat_secs": 2,  # (default: 6 × the interval; tests of the idle cadence set it)
    "claim_timeout_secs": 2,
    "max_attempts": 3,
    "task_timeout_secs": 30,
    "drain_timeout_secs": 5,
}


def agent_table(**overrides) -> str:
    values = {**FAST_AGENT, **overrides}
    if "idle_heartbeat_secs" not in overrides:  # never below the (overridden) working interval
        values["idle_heartbeat_secs"] = max(
            values["idle_heartbeat_secs"], values["heartbeat_interval_secs"]
        )
    lines = ["[agent]"] + [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    lines += ["", "[agent_clis.fake]", f'command = "{sys.executable} {FAKE_CLI}"']
    return "\n".join(lines) + "\n"


def write_worker_town(root: Path, redis_url: str | None, **agent) -> Path:
    """A town on ``redis_url`` (None: the town's own embedded server) running the fake CLI."""
    root.mkdir(parents=True, exist_ok=True)
    redis_table = f'[redis]\nurl = "{redis_url}"\n' if redis_url else ""
    name = f"w-{uuid.uuid4().hex[:10]}"
    (root / "tinytown.toml").write_text(
        f'name = "{name}"\ndefault_cli = "fake"\n\n{redis_table}\n{agent_table(**agent)}'
    )
    return root


@contextlib.contextmanager
def in_process_worker(root: Path):
    """A registered ``agent_worker.Worker`` in this process (no serve loop, no heartbeat thread),
    for driving one step deterministically; its connections and log files closed after."""
    import agent_worker
    from tinytown.config import load_config

    worker = agent_worker.Worker(load_config(root, env={}))
    worker.connect()
    worker.register()
    try:
        yield worker
    finally:
        worker.logs.close()
        worker.docket.close()
        worker.town.redis.close()


def poll(check, *, timeout: float = 15.0, interval: float = 0.05, message: str = "condition"):
    """Call ``check`` until it returns a truthy value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)


def process_gone(pid: int) -> bool:
    """True once ``pid`` no longer runs (a zombie awaiting its reaper counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        return open(f"/proc/{pid}/stat").read().split()[2] == "Z"
    except FileNotFoundError:
        return True


class WorkerProc:
    def __init__(self, popen: subprocess.Popen, log_path: Path):
        self.popen, self.log_path = popen, log_path
        self._agent_id: str | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def events(self, name: str | None = None) -> list[dict]:
        """Parsed ``key=value`` log lines (optionally only one event)."""
        out = []
        text = self.log_path.read_text() if self.log_path.exists() else ""
        for line in text.splitlines():
            fields = parse_line(line)
            if fields and (name is None or fields.get("event") == name):
                out.append(fields)
        return out

    @property
    def agent_id(self) -> str:
        if self._agent_id is None:
            first = poll(
                lambda: self.events("agent_state"), message=f"worker {self.pid} to register"
            )
            self._agent_id = first[0]["agent"]
        return self._agent_id

    def wait_event(self, name: str, timeout: float = 15.0, **match) -> dict:
        def find():
            for e in self.events(name):
                if all(e.get(k) == v for k, v in match.items()):
                    return e
            return None

        return poll(
            find,
            timeout=timeout,
            message=f"event {name} {match} from worker {self.pid}:\n{self.log_path.read_text()}",
        )

    def wait_exit(self, timeout: float = 20.0) -> int:
        return self.popen.wait(timeout=timeout)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        self.popen.send_signal(sig)


def parse_line(line: str) -> dict:
    """``ts=… event=x key="quoted value"`` → dict."""
    fields, i, n = {}, 0, len(line)
    while i < n:
        eq = line.find("=", i)
        if eq < 0:
            break
        key = line[i:eq].strip()
        j = eq + 1
        if j < n and line[j] == '"':
            decoder = json.JSONDecoder()
            value, end = decoder.raw_decode(line, j)
            j = end
        else:
            end = line.find(" ", j)
            end = n if end < 0 else end
            value, j = line[j:end], end
        fields[key] = value
        i = j + 1
    return fields


class Workers:
    """Starts ``python agent_worker.py --town DIR`` subprocesses; stops them by PID at teardown."""

    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self.procs: list[WorkerProc] = []

    def start(
        self,
        town_dir: Path,
        *,
        name: str | None = None,
        agent_id: str | None = None,
        env: dict | None = None,
        args: tuple = (),
    ) -> WorkerProc:
        full_env = {k: v for k, v in os.environ.items() if k not in CONFIG_ENV}
        full_env["TINYTOWN_AGENT_NAME"] = name or f"worker-{len(self.procs) + 1}"
        full_env["PYTHONUNBUFFERED"] = "1"
        if agent_id:
            full_env["TINYTOWN_AGENT_ID"] = agent_id
        full_env.update(env or {})
        log_path = self.tmp_path / f"worker-{len(self.procs) + 1}-{uuid.uuid4().hex[:6]}.log"
        with open(log_path, "w") as log:
            popen = subprocess.Popen(
                [sys.executable, str(WORKER), "--town", str(town_dir), *args],
                cwd=str(town_dir),
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        proc = WorkerProc(popen, log_path)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.alive():
                proc.signal(signal.SIGKILL)
                proc.popen.wait(timeout=10)


def read_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def kill_recorded_groups(path: Path) -> None:
    """Kill fake-CLI process groups a test left behind (after SIGKILLing their worker)."""
    for rec in read_records(path):
        for pid in (rec.get("pgid"), rec.get("child_pid")):
            if pid:
                try:
                    os.killpg(pid, signal.SIGKILL) if pid == rec.get("pgid") else os.kill(
                        pid, signal.SIGKILL
                    )
                except (ProcessLookupError, PermissionError):
                    pass


import pytest  # noqa: E402  (fixtures below are imported by the worker test modules)


@pytest.fixture
def workers(tmp_path):
    """Start real worker processes; all are stopped (SIGKILL by PID) at teardown."""
    ws = Workers(tmp_path)
    yield ws
    ws.stop_all()


@pytest.fixture
def worker_town(tmp_path, redis_url):
    """Factory: a worker town on the session Redis with FAST_AGENT settings plus overrides."""
    made = []

    def make(**agent):
        root = tmp_path / f"town{len(made) + 1}"
        made.append(root)
        return write_worker_town(root, redis_url, **agent)

    return make
