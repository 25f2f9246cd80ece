"""A tinytown.toml holding secrets that its group or others can read is named at start — by a real
townhall (once, from the gunicorn master), a real worker and ``tt status`` — with its mode, the
keys (never their values) and ``chmod 600``; a private file, or one without secrets, is not."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from tinytown.api.startup import bootstrap_api_key
from tinytown.config import load_config
from tinytown.config.exposure import exposure, secret_keys

from .conftest import CONFIG_ENV, free_port, write_town
from .secrets_seen import remember
from .townhall_support import Townhall, run_tt
from .worker_support import WORKER, write_worker_town

HOOK_SECRET = remember("hook-hmac-" + os.urandom(12).hex())
HOOK_URL = remember("http://127.0.0.1:9/hook/" + os.urandom(12).hex())
SECRET_TABLES = f'[[notify]]\nname = "ops"\nurl = "{HOOK_URL}"\nsecret = "{HOOK_SECRET}"\n'
SECRET_KEYS = "notify[0].url,notify[0].secret"


def exposed_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if "config_exposed" in line or "warning:" in line]


def test_every_kind_of_secret_is_named_by_its_key():
    doc = {
        "redis": {"url": "redis://app:pw@redis:6379/0", "password": "pw"},
        "notify": [
            {"name": "phone", "kind": "ntfy", "url": "https://ntfy.sh/topic"},
            {"name": "hook", "url": "https://hooks.example/in", "secret": "s"},
        ],
        "agent_clis": {
            "claude": {"command": "claude", "env": {"ANTHROPIC_API_KEY": "k", "LANG": "C"}},
            "gh": {"command": "x", "env": {"GITHUB_TOKEN": "t"}},
        },
    }
    assert secret_keys(doc) == [
        "redis.password",
        "redis.url",
        "notify[0].url",
        "notify[1].url",
        "notify[1].secret",
        "agent_clis.claude.env.ANTHROPIC_API_KEY",
        "agent_clis.gh.env.GITHUB_TOKEN",
    ]


def test_hashes_public_oidc_settings_variable_names_and_paths_are_not_secrets():
    doc = {
        "redis": {"url": "redis://redis:6379/0", "tls_key": "/etc/redis/key.pem"},
        "townhall": {
            "auth": {
                "mode": "oidc",
                "api_key_hash": "$argon2id$v=19$m=19456,t=2,p=1$abc$def",
                "keys": [{"name": "ci", "hash": "$argon2id$v=19$m=19456,t=2,p=1$abc$def"}],
                "issuer": "https://login.example.com/",
                "jwks_url": "https://login.example.com/jwks.json",
            },
            "tls": {"key_file": "server-key.pem"},
        },
        "notify": [
            {"name": "hook", "url": "", "secret_env": "HOOK_SECRET"},
            {"name": "local", "url": "http://127.0.0.1:9000/"},  # the README's: a bare origin
        ],
    }
    assert secret_keys(doc) == []
    topic = {"notify": [{"name": "t", "url": "http://127.0.0.1:9000/?t=x"}]}
    assert secret_keys(topic) == ["notify[0].url"]  # (a query can be the capability)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620])
def test_a_file_with_secrets_and_group_or_other_access_is_exposed(tmp_path, redis_url, mode):
    path = write_town(tmp_path, redis_url, tables=SECRET_TABLES) / "tinytown.toml"
    path.chmod(mode)
    found = exposure(path)
    assert found is not None and found.keys == ("notify[0].url", "notify[0].secret")
    assert found.fields() == {
        "file": str(path),
        "mode": f"{mode:04o}",
        "secrets": SECRET_KEYS,
        "fix": f"chmod 600 {path}",
    }
    assert HOOK_SECRET not in found.message and HOOK_URL not in found.message


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o700])
def test_a_private_file_is_not_exposed(tmp_path, redis_url, mode):
    path = write_town(tmp_path, redis_url, tables=SECRET_TABLES) / "tinytown.toml"
    path.chmod(mode)
    assert exposure(path) is None


def test_a_file_without_secrets_is_not_exposed_whatever_its_mode(tmp_path, redis_url):
    path = write_town(tmp_path, redis_url) / "tinytown.toml"
    path.chmod(0o666)
    assert exposure(path) is None and exposure(None) is None


def test_the_container_key_bootstrap_keeps_a_private_file_private(tmp_path, redis_url):
    path = write_town(tmp_path, redis_url, tables=SECRET_TABLES) / "tinytown.toml"
    path.chmod(0o600)
    config = load_config(tmp_path, env={})
    bootstrapped = bootstrap_api_key(config, {"TINYTOWN_BOOTSTRAP_API_KEY": "1"}, ["0.0.0.0:80"])
    assert bootstrapped.townhall.auth.mode == "api_key"  # the file was rewritten
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and exposure(path) is None
    remember((tmp_path / ".townhall-api-key").read_text().strip())


# --- at start, for real -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "tables, mode, warned",
    [(SECRET_TABLES, 0o644, True), (SECRET_TABLES, 0o600, False), ("", 0o644, False)],
    ids=["secrets-0644", "secrets-0600", "no-secrets-0644"],
)
def test_townhall_warns_once_from_the_master(tmp_path, redis_url, tables, mode, warned):
    port = free_port()
    write_town(tmp_path, redis_url, tables=f"[townhall]\nrest_port = {port}\nworkers = 2\n{tables}")
    path = tmp_path / "tinytown.toml"
    path.chmod(mode)
    townhall = Townhall(tmp_path, port)
    try:
        townhall.wait_serving()
    finally:
        townhall.stop()
    lines = exposed_lines(townhall.output)
    if not warned:
        assert lines == []
        return
    assert len(lines) == 1, townhall.output  # two workers, one line: the master's
    (line,) = lines
    assert "event=config_exposed" in line and f"file={path}" in line and "mode=0644" in line
    assert f"secrets={SECRET_KEYS}" in line and f'fix="chmod 600 {path}"' in line
    assert HOOK_SECRET not in townhall.output and HOOK_URL not in townhall.output


@pytest.mark.parametrize("mode, warned", [(0o644, True), (0o600, False)])
def test_the_worker_warns_at_start(tmp_path, redis_url, mode, warned):
    root = write_worker_town(tmp_path, redis_url, idle_timeout_secs=1)
    with open(root / "tinytown.toml", "a") as toml:
        toml.write("\n" + SECRET_TABLES)
    (root / "tinytown.toml").chmod(mode)
    env = {k: v for k, v in os.environ.items() if k not in CONFIG_ENV}
    result = subprocess.run(
        [sys.executable, str(WORKER), "--town", str(root)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = exposed_lines(result.stderr)
    assert len(lines) == (1 if warned else 0), result.stderr
    if warned:
        assert "level=warning event=config_exposed" in lines[0]
        assert f"secrets={SECRET_KEYS}" in lines[0] and "mode=0644" in lines[0]
    assert HOOK_SECRET not in result.stderr and HOOK_URL not in result.stderr


@pytest.mark.parametrize("mode, warned", [(0o644, True), (0o600, False)])
def test_tt_status_warns_on_stderr(tmp_path, redis_url, mode, warned):
    path = write_town(tmp_path, redis_url, tables=SECRET_TABLES) / "tinytown.toml"
    path.chmod(mode)
    result = run_tt(tmp_path, "status", "--json")
    assert result.returncode == 0, result.stderr
    expected = (
        [
            f"tt: warning: {path} holds secrets (notify[0].url, notify[0].secret) and its mode "
            f"0644 gives its group or others access; run: chmod 600 {path}"
        ]
        if warned
        else []
    )
    assert result.stderr.splitlines() == expected
    assert HOOK_SECRET not in result.stdout + result.stderr
