"""The README's run command in an empty directory: townhall answers and its Redis starts."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import redis
import requests

from tinytown.config import load_config
from tinytown.connection.embedded import EmbeddedServer

from .conftest import BIN_DIR, free_port

RUN_COMMAND = ["gunicorn", "-c", "python:tinytown.gunicorn_conf", "townhall:app"]


def start_townhall(cwd: Path, path_env: str, port: int) -> subprocess.Popen:
    env = {
        "PATH": path_env,
        "HOME": os.environ.get("HOME", "/tmp"),
        "TINYTOWN_REST_PORT": str(port),
    }
    return subprocess.Popen(
        [str(BIN_DIR / RUN_COMMAND[0]), *RUN_COMMAND[1:]],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_health(proc: subprocess.Popen, port: int, timeout: float = 30) -> requests.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"townhall exited {proc.returncode}: {proc.stdout.read()}")
        try:
            return requests.get(f"http://127.0.0.1:{port}/health", timeout=2)
        except requests.ConnectionError:
            time.sleep(0.1)
    pytest.fail("townhall did not answer /health in time")


def run_in_empty_dir(tmp_path: Path, path_env: str) -> dict:
    town = tmp_path / "empty"
    town.mkdir()
    port = free_port()
    proc = start_townhall(town, path_env, port)
    try:
        response = wait_health(proc, port)
        info = redis.Redis(
            unix_socket_path=str(town / ".tt" / "redis.sock"), decode_responses=True
        ).info("server")
        return {"status": response.status_code, "body": response.json(), "info": info}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        EmbeddedServer(load_config(town, env={})).stop()


def test_run_command_without_redis_server_on_path_uses_the_embedded_valkey(tmp_path):
    result = run_in_empty_dir(tmp_path, path_env=str(BIN_DIR))
    assert result["status"] == 200 and result["body"]["status"] == "ok"
    assert result["info"].get("server_name") == "valkey"


@pytest.mark.skipif(
    not shutil.which("redis-server"), reason="no redis-server on PATH (.ci/run installs one)"
)
def test_run_command_with_redis_server_on_path_uses_it(tmp_path):
    path_env = os.pathsep.join([str(BIN_DIR), str(Path(shutil.which("redis-server")).parent)])
    result = run_in_empty_dir(tmp_path, path_env=path_env)
    assert result["status"] == 200
    assert "server_name" not in result["info"] or result["info"]["server_name"] == "redis"
    assert result["info"]["redis_version"].startswith(("7.", "8."))
