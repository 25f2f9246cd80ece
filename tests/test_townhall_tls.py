"""TLS and mTLS served by a real gunicorn, with certificates made here; start-up refusals and
their exit codes (3 configuration, 4 Redis); gunicorn run without the project's config module."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests

from .conftest import BIN_DIR, CONFIG_ENV, free_port, tt_executable, write_town
from .old_redis import closed_port

GUNICORN = str(BIN_DIR / "gunicorn")


def start(cwd: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    full_env = {k: v for k, v in os.environ.items() if k not in CONFIG_ENV}
    full_env.update(env or {})
    return subprocess.Popen(
        [GUNICORN, *args],
        cwd=cwd,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def stop(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
    return out


def wait_until_serving(
    proc: subprocess.Popen, url: str, timeout: float = 30, **kwargs
) -> requests.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"gunicorn exited {proc.returncode}: {proc.stdout.read()}")
        try:
            return requests.get(url, timeout=2, **kwargs)
        except requests.exceptions.SSLError:
            raise
        except requests.ConnectionError:
            time.sleep(0.1)
    pytest.fail(f"townhall did not answer on {url}")


def tls_town(tmp_path, redis_url, pki, port, mtls: str = "") -> Path:
    tables = (
        f"[townhall]\nrest_port = {port}\nworkers = 1\n\n"
        f'[townhall.tls]\nenabled = true\ncert_file = "{pki / "server.pem"}"\nkey_file = "{pki / "server-key.pem"}"\n\n'
        + mtls
    )
    return write_town(tmp_path, redis_url, tables=tables)


def test_tls_is_served(tmp_path, redis_url, pki):
    port = free_port()
    town = tls_town(tmp_path, redis_url, pki, port)
    proc = start(town, "-c", "python:tinytown.gunicorn_conf", "townhall:app")
    try:
        resp = wait_until_serving(
            proc, f"https://127.0.0.1:{port}/health", verify=str(pki / "ca.pem")
        )
        assert resp.status_code == 200 and resp.json()["status"] == "ok"
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{port}/health", timeout=3)  # plain HTTP is not spoken
    finally:
        stop(proc)


def test_mtls_required_refuses_clients_without_a_certificate_from_the_ca(tmp_path, redis_url, pki):
    port = free_port()
    mtls = f'[townhall.mtls]\nenabled = true\nrequired = true\nca_file = "{pki / "ca.pem"}"\n'
    town = tls_town(tmp_path, redis_url, pki, port, mtls)
    proc = start(town, "-c", "python:tinytown.gunicorn_conf", "townhall:app")
    url, ca = f"https://127.0.0.1:{port}/health", str(pki / "ca.pem")
    try:
        resp = wait_until_serving(proc, url, verify=ca, cert=str(pki / "client.pem"))
        assert resp.status_code == 200
        for cert in (None, str(pki / "stranger.pem")):
            with pytest.raises((requests.exceptions.SSLError, requests.ConnectionError)):
                requests.get(url, verify=ca, cert=cert, timeout=3)
    finally:
        stop(proc)


def test_non_loopback_bind_without_auth_refuses_to_start_with_the_fix(tmp_path, redis_url):
    write_town(tmp_path, redis_url)
    proc = start(
        tmp_path,
        "-c",
        "python:tinytown.gunicorn_conf",
        "-b",
        f"0.0.0.0:{free_port()}",
        "townhall:app",
    )
    proc.wait(timeout=30)
    out = proc.stdout.read()
    assert proc.returncode == 3, out
    assert "refuses to start" in out and 'mode = "api_key"' in out


def test_missing_tls_files_refuse_to_start(tmp_path, redis_url):
    write_town(
        tmp_path,
        redis_url,
        tables='[townhall.tls]\nenabled = true\ncert_file = "gone.pem"\nkey_file = "gone-key.pem"\n',
    )
    proc = start(tmp_path, "-c", "python:tinytown.gunicorn_conf", "townhall:app")
    proc.wait(timeout=30)
    out = proc.stdout.read()
    assert proc.returncode == 3 and "gone.pem" in out and "readable PEM" in out


def test_plain_gunicorn_in_a_tt_init_town_honours_townhall_config(tmp_path, redis_url):
    env = {k: v for k, v in os.environ.items() if k not in CONFIG_ENV}
    subprocess.run(
        [tt_executable(), "init", "--name", "shim"],
        cwd=tmp_path,
        env=env,
        check=True,
        capture_output=True,
    )
    assert (tmp_path / "gunicorn.conf.py").exists()
    port = free_port()
    text = (
        (tmp_path / "tinytown.toml").read_text().replace("rest_port = 8080", f"rest_port = {port}")
    )
    (tmp_path / "tinytown.toml").write_text(text)
    proc = start(tmp_path, "townhall:app", env={"REDIS_URL": redis_url})
    try:
        resp = wait_until_serving(proc, f"http://127.0.0.1:{port}/v1/town")
        assert resp.status_code == 200 and resp.json()["name"] == "shim"
    finally:
        out = stop(proc)
    assert "without tinytown.gunicorn_conf" not in out


def test_plain_gunicorn_without_config_still_refuses_an_exposed_bind(tmp_path, redis_url):
    write_town(tmp_path, redis_url)
    proc = start(tmp_path, "-b", f"0.0.0.0:{free_port()}", "-w", "1", "townhall:app")
    try:
        proc.wait(timeout=30)
    finally:
        out = stop(proc)
    assert proc.returncode != 0 and "refuses to start" in out


def exit_of(proc: subprocess.Popen) -> tuple[int, str]:
    """The exit status and output of a gunicorn expected to refuse to start."""
    try:
        proc.wait(timeout=30)
    finally:
        out = stop(proc)  # never leaves one serving when the test fails
    return proc.returncode, out


def test_invalid_tinytown_toml_exits_3_naming_the_key(tmp_path):
    (tmp_path / "tinytown.toml").write_text('name = "bad"\n[agent]\nmax_attempts = 0\n')
    code, out = exit_of(start(tmp_path, "-c", "python:tinytown.gunicorn_conf", "townhall:app"))
    assert code == 3, out
    assert "agent.max_attempts = 0 is invalid" in out and "Traceback" not in out


def test_unreachable_redis_exits_4_before_workers_boot_without_the_password(tmp_path):
    write_town(tmp_path, "redis://unused", tables=f"[townhall]\nrest_port = {free_port()}\n")
    env = {"REDIS_URL": f"redis://:s3cret-pw@127.0.0.1:{closed_port()}/0"}
    code, out = exit_of(
        start(tmp_path, "-c", "python:tinytown.gunicorn_conf", "townhall:app", env=env)
    )
    assert code == 4, out
    assert "townhall: cannot reach Redis at redis://:****@127.0.0.1" in out
    assert "s3cret-pw" not in out and "Traceback" not in out and "Booting worker" not in out


def test_plain_gunicorn_without_config_refuses_tls_it_would_not_serve(tmp_path, redis_url, pki):
    tls_town(tmp_path, redis_url, pki, free_port())
    code, out = exit_of(
        start(tmp_path, "-b", f"127.0.0.1:{free_port()}", "-w", "1", "townhall:app")
    )
    assert code == 3, out
    assert "plain HTTP" in out and "-c python:tinytown.gunicorn_conf" in out and "tt init" in out
    assert "Traceback" not in out


def test_plain_gunicorn_without_config_warns_that_its_own_flags_apply(tmp_path, redis_url):
    write_town(tmp_path, redis_url)
    port = free_port()
    proc = start(tmp_path, "-b", f"127.0.0.1:{port}", "-w", "1", "townhall:app")
    try:
        assert wait_until_serving(proc, f"http://127.0.0.1:{port}/health").status_code == 200
    finally:
        out = stop(proc)
    warnings = [line for line in out.splitlines() if "without tinytown.gunicorn_conf" in line]
    assert len(warnings) == 1 and "gunicorn's own flags" in warnings[0] and "tt init" in warnings[0]
