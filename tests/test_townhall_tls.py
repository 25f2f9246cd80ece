"""TLS and mTLS served by a real gunicorn, with certificates made here; start-up refusals."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests
import trustme

from .conftest import BIN_DIR, CONFIG_ENV, free_port, tt_executable, write_town

GUNICORN = str(BIN_DIR / "gunicorn")


def start(cwd: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    full_env = {k: v for k, v in os.environ.items() if k not in CONFIG_ENV}
    full_env.update(env or {})
    return subprocess.Popen([GUNICORN, *args], cwd=cwd, env=full_env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip


def stop(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
    return out


def wait_until_serving(proc: subprocess.Popen, url: str, timeout: float = 30, **kwargs) -> requests.Response:
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


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    root = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    server.cert_chain_pems[0].write_to_path(root / "server.pem")
    server.private_key_pem.write_to_path(root / "server-key.pem")
    ca.cert_pem.write_to_path(root / "ca.pem")
    ca.issue_cert("ci-client@example").private_key_and_cert_chain_pem.write_to_path(root / "client.pem")
    trustme.CA().issue_cert("stranger@example").private_key_and_cert_chain_pem.write_to_path(root / "stranger.pem")
    return root


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
        resp = wait_until_serving(proc, f"https://127.0.0.1:{port}/health", verify=str(pki / "ca.pem"))
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
    proc = start(tmp_path, "-c", "python:tinytown.gunicorn_conf", "-b", f"0.0.0.0:{free_port()}", "townhall:app")
    proc.wait(timeout=30)
    out = proc.stdout.read()
    assert proc.returncode == 3, out
    assert "refuses to start" in out and 'mode = "api_key"' in out


def test_missing_tls_files_refuse_to_start(tmp_path, redis_url):
    write_town(tmp_path, redis_url, tables='[townhall.tls]\nenabled = true\ncert_file = "gone.pem"\nkey_file = "gone-key.pem"\n')
    proc = start(tmp_path, "-c", "python:tinytown.gunicorn_conf", "townhall:app")
    proc.wait(timeout=30)
    out = proc.stdout.read()
    assert proc.returncode == 3 and "gone.pem" in out and "readable PEM" in out


def test_plain_gunicorn_in_a_tt_init_town_honours_townhall_config(tmp_path, redis_url):
    env = {k: v for k, v in os.environ.items() if k not in CONFIG_ENV}
    subprocess.run([tt_executable(), "init", "--name", "shim"], cwd=tmp_path, env=env, check=True, capture_output=True)
    assert (tmp_path / "gunicorn.conf.py").exists()
    port = free_port()
    text = (tmp_path / "tinytown.toml").read_text().replace("rest_port = 8080", f"rest_port = {port}")
    (tmp_path / "tinytown.toml").write_text(text)
    proc = start(tmp_path, "townhall:app", env={"REDIS_URL": redis_url})
    try:
        resp = wait_until_serving(proc, f"http://127.0.0.1:{port}/v1/town")
        assert resp.status_code == 200 and resp.json()["name"] == "shim"
    finally:
        stop(proc)


def test_plain_gunicorn_without_config_still_refuses_an_exposed_bind(tmp_path, redis_url):
    write_town(tmp_path, redis_url)
    proc = start(tmp_path, "-b", f"0.0.0.0:{free_port()}", "-w", "1", "townhall:app")
    try:
        proc.wait(timeout=30)
    finally:
        out = stop(proc)
    assert proc.returncode != 0 and "refuses to start" in out
