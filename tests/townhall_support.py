"""A real townhall (gunicorn with ``tinytown.gunicorn_conf``) for tests, with its output in a file
(a pipe nobody reads could fill and stall it), and ``tt auth add-key`` run for real."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests

from .conftest import BIN_DIR, CONFIG_ENV, tt_executable
from .secrets_seen import remember

KEY_HEADER = "API key (shown only once; store it now, it is kept nowhere):"


class Townhall:
    def __init__(self, cwd: Path, port: int, env: dict | None = None):
        self.url = f"http://127.0.0.1:{port}"
        self.log = cwd / f"townhall-{port}.out"
        full_env = {k: v for k, v in os.environ.items() if k not in CONFIG_ENV}
        full_env.update(env or {})
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(
                [str(BIN_DIR / "gunicorn"), "-c", "python:tinytown.gunicorn_conf", "townhall:app"],
                cwd=cwd,
                env=full_env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    @property
    def output(self) -> str:
        return self.log.read_text()

    def wait_serving(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"townhall exited {self.proc.returncode}: {self.output}")
            try:
                requests.get(f"{self.url}/health", timeout=2)
                return
            except requests.ConnectionError:
                time.sleep(0.1)
        pytest.fail(f"townhall did not answer on {self.url}: {self.output}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def run_tt(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in CONFIG_ENV}
    return subprocess.run(
        [tt_executable(), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def add_key(cwd: Path, name: str, *scopes: str) -> tuple[str, str]:
    """``tt auth add-key NAME`` in ``cwd``: the raw key it printed once, and its whole output."""
    args = ["auth", "add-key", name] + (["--scopes", ",".join(scopes)] if scopes else [])
    result = run_tt(cwd, *args)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    return remember(lines[lines.index(KEY_HEADER) + 1]), result.stdout
