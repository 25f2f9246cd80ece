"""Shared fixtures: one real Redis per test session, an isolated town per test.

The session server is started through the project's own embedded-server code
(:class:`tinytown.connection.embedded.EmbeddedServer`). Each test gets a town directory whose
``tinytown.toml`` points at that server and carries a unique town name, so tests never see each
other's keys. Environment variables that would change configuration are cleared for every test.
Every log line the suite captures is scanned for secrets (:mod:`tests.log_scan`).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis
import trustme

from tinytown.config import load_config
from tinytown.connection.embedded import EmbeddedServer
from tinytown.core import defaults
from tinytown.store import Town

# The log scan (tests/log_scan.py): no captured log line or log file holds a secret.
from .log_scan import (  # noqa: F401 - a plugin's hooks and fixture, found here by name
    log_scan_basetemp,
    pytest_runtest_logreport,
    pytest_runtest_teardown,
    pytest_sessionfinish,
    pytest_terminal_summary,
)

CONFIG_ENV = (
    "REDIS_URL",
    "TINYTOWN_REDIS_PASSWORD",
    "TINYTOWN_TOWN_DIR",
    "TINYTOWN_TOWN_NAME",
    "TINYTOWN_REST_BIND",
    "TINYTOWN_REST_PORT",
    "TINYTOWN_AGENT_CLI",
    "TINYTOWN_AGENT_ID",
    "TINYTOWN_AGENT_NAME",
    "TINYTOWN_TASK_ID",
    "TINYTOWN_URL",
    "TINYTOWN_BOOTSTRAP_API_KEY",
)

BIN_DIR = Path(sys.executable).parent


def tt_executable() -> str:
    """The installed ``tt`` console script of this interpreter's environment."""
    path = BIN_DIR / "tt"
    return str(path) if path.exists() else shutil.which("tt") or "tt"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> Path:
    """Certificates made here: ``ca.pem`` signs ``server.pem``/``server-key.pem`` (127.0.0.1,
    localhost), ``client-cert.pem``/``client-key.pem`` and ``client.pem`` (key and chain in one);
    ``stranger.pem`` is signed by another CA."""
    root = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    server.cert_chain_pems[0].write_to_path(root / "server.pem")
    server.private_key_pem.write_to_path(root / "server-key.pem")
    ca.cert_pem.write_to_path(root / "ca.pem")
    client = ca.issue_cert("ci-client@example")
    client.private_key_and_cert_chain_pem.write_to_path(root / "client.pem")
    client.cert_chain_pems[0].write_to_path(root / "client-cert.pem")
    client.private_key_pem.write_to_path(root / "client-key.pem")
    trustme.CA().issue_cert("stranger@example").private_key_and_cert_chain_pem.write_to_path(
        root / "stranger.pem"
    )
    return root


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in CONFIG_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> str:
    """A real Redis for the session, on a unix socket, started by the project's own code."""
    root = tmp_path_factory.mktemp("redis")
    (root / "tinytown.toml").write_text('name = "session-redis"\n')
    server = EmbeddedServer(load_config(root, env={}))
    server.ensure_running()
    # Nobody is judged dead while Redis has been up for less than one dead-after window of a
    # town's interval (AgentStore.settled: after a restart, live agents get it to beat again).
    # Tests judge agents with backdated beats, so the session's server starts settled.
    client = redis.Redis.from_url(server.target.url)
    uptime = int(client.info("server")["uptime_in_seconds"])
    client.close()
    time.sleep(max(0, defaults.HEARTBEAT_INTERVAL_SECS * defaults.DEAD_AFTER_HEARTBEATS - uptime))
    yield server.target.url
    server.stop()


def write_town(root: Path, redis_url: str, *, top: str = "", tables: str = "") -> Path:
    """Write ``tinytown.toml``: a unique town name on the session Redis.

    ``top`` adds top-level keys (``max_agents = 3``); ``tables`` adds TOML tables after
    ``[redis]`` (``"[agent]\nidle_timeout_secs = 1"``).
    """
    name = f"t-{uuid.uuid4().hex[:10]}"
    text = f'name = "{name}"\n{top}\n\n[redis]\nurl = "{redis_url}"\n\n{tables}\n'
    (root / "tinytown.toml").write_text(text)
    return root


@pytest.fixture
def town_dir(tmp_path, redis_url) -> Path:
    """An isolated town (unique name) on the session Redis."""
    return write_town(tmp_path, redis_url)


@pytest.fixture
def config(town_dir):
    return load_config(town_dir, env={})


@pytest.fixture
def town(config):
    t = Town.connect(config)
    yield t
    t.redis.close()


@pytest.fixture
def run_tt(town_dir):
    """Run the real ``tt`` console script in the test's town; returns CompletedProcess."""

    def run(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 60):
        full_env = {k: v for k, v in os.environ.items() if k not in CONFIG_ENV}
        full_env.update(env or {})
        return subprocess.run(
            [tt_executable(), *args],
            cwd=cwd or town_dir,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run


def next_message(listener, timeout: float = 5.0) -> str | None:
    """The next pub/sub message's data (redis-py returns None for an ignored subscribe reply)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = listener.get_message(timeout=max(0.0, deadline - time.monotonic()))
        if message is not None:
            return message["data"]
    return None
