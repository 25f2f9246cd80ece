"""Setting up API keys without traps: `tt auth add-key` edits tinytown.toml safely, `gen-key`
points to it, api_key mode without a key refuses to start, and SIGHUP makes townhall read a new
key (a real gunicorn)."""

from __future__ import annotations

import os
import signal
import time
import tomllib

import pytest
import requests
from argon2 import PasswordHasher

from tinytown.config import load_config
from tinytown.core.errors import ConfigError

from .conftest import free_port, write_town
from .townhall_support import Townhall, add_key, run_tt


@pytest.fixture
def inited(tmp_path):
    """A town made by `tt init` (its tinytown.toml already has [townhall.auth] mode = "none")."""
    result = run_tt(tmp_path, "init", "--name", "keys")
    assert result.returncode == 0, result.stderr
    return tmp_path


def test_add_key_appends_a_named_key_sets_api_key_mode_and_keeps_the_rest_of_the_file(inited):
    path = inited / "tinytown.toml"
    before = path.read_text()
    path.write_text(before + "\n# my own note, kept\n")
    key, out = add_key(inited, "ci", "town.read", "town.write")

    text = path.read_text()
    assert "# my own note, kept" in text and "# Tinytown town configuration." in text
    assert text.count("[townhall.auth]") == 1 and text.count('mode = "none"') == 0
    auth = tomllib.loads(text)["townhall"]["auth"]
    assert auth["mode"] == "api_key"
    (entry,) = auth["keys"]
    assert entry["name"] == "ci" and entry["scopes"] == ["town.read", "town.write"]
    assert entry["hash"].startswith("$argon2id$") and PasswordHasher().verify(entry["hash"], key)
    assert key not in text  # only the hash is stored
    assert out.count(key) == 1  # printed once
    assert "Authorization: Bearer <the key>" in out and "reload townhall: kill -HUP" in out
    assert load_config(inited, env={}).townhall.auth.keys[0].name == "ci"


def test_add_key_without_scopes_makes_an_admin_key_and_a_second_key_is_appended(inited):
    add_key(inited, "first")
    add_key(inited, "second", "town.read")
    keys = load_config(inited, env={}).townhall.auth.keys
    assert [(k.name, k.scopes) for k in keys] == [("first", ("admin",)), ("second", ("town.read",))]


def test_add_key_refuses_a_name_already_present_in_one_line_and_writes_nothing(inited):
    add_key(inited, "ci")
    before = (inited / "tinytown.toml").read_text()
    result = run_tt(inited, "auth", "add-key", "ci")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "already configured" in result.stderr
    assert (inited / "tinytown.toml").read_text() == before


def test_add_key_refuses_unknown_scopes_and_oidc_mode(inited):
    bad = run_tt(inited, "auth", "add-key", "x", "--scopes", "town.read,everything")
    assert bad.returncode == 2 and "'everything' is not a scope" in bad.stderr
    path = inited / "tinytown.toml"
    path.write_text(
        path.read_text().replace(
            'mode = "none"',
            'mode = "oidc"\nissuer = "https://i/"\naudience = "a"\njwks_url = "https://i/j"',
        )
    )
    result = run_tt(inited, "auth", "add-key", "x")
    assert result.returncode == 1 and 'mode = "oidc"' in result.stderr


def test_add_key_makes_the_auth_table_when_the_file_has_none(tmp_path):
    (tmp_path / "tinytown.toml").write_text('# mine\nname = "bare"\n')
    add_key(tmp_path, "ci")
    text = (tmp_path / "tinytown.toml").read_text()
    assert text.startswith('# mine\nname = "bare"\n')
    assert load_config(tmp_path, env={}).townhall.auth.mode == "api_key"


def test_gen_key_points_to_add_key_and_prints_no_second_auth_table(run_tt):
    result = run_tt("auth", "gen-key")
    assert result.returncode == 0
    assert "tt auth add-key NAME" in result.stdout
    assert "\n[townhall.auth]\n" not in result.stdout  # no table header to paste twice
    assert "do not add a second one" in result.stdout
    helptext = run_tt("auth", "gen-key", "--help").stdout
    assert "tt auth add-key" in " ".join(helptext.split())


def test_api_key_mode_without_a_key_is_a_configuration_error_naming_the_fix(tmp_path, redis_url):
    write_town(tmp_path, redis_url, tables='[townhall.auth]\nmode = "api_key"\n')
    with pytest.raises(ConfigError, match=r"no key is configured.*tt auth add-key NAME"):
        load_config(tmp_path, env={})


def test_townhall_in_api_key_mode_without_a_key_exits_3_with_one_line(tmp_path, redis_url):
    write_town(tmp_path, redis_url, tables='[townhall.auth]\nmode = "api_key"\n')
    townhall = Townhall(tmp_path, free_port())
    try:
        assert townhall.proc.wait(timeout=30) == 3
    finally:
        townhall.stop()
    lines = townhall.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("townhall: "), lines
    assert "tt auth add-key NAME" in lines[0]


def test_sighup_makes_a_running_townhall_accept_a_key_added_by_add_key(tmp_path, redis_url):
    port = free_port()
    write_town(tmp_path, redis_url, tables=f"[townhall]\nrest_port = {port}\nworkers = 2\n")
    first, _ = add_key(tmp_path, "first", "town.read")
    townhall = Townhall(tmp_path, port)
    try:
        townhall.wait_serving()

        def status(key: str) -> int:
            headers = {"Authorization": f"Bearer {key}"}
            return requests.get(f"{townhall.url}/v1/town", headers=headers, timeout=10).status_code

        assert status(first) == 200
        second, out = add_key(tmp_path, "second", "town.read")
        assert f"reload townhall: kill -HUP {townhall.proc.pid} (or restart it)" in out
        assert status(second) == 401  # not read yet

        os.kill(townhall.proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + 20
        while status(second) != 200:  # every new worker has it; old ones are gone
            assert time.monotonic() < deadline, townhall.output
            time.sleep(0.2)
        assert all(status(second) == 200 for _ in range(6))
        assert status(first) == 200 and townhall.proc.poll() is None
    finally:
        townhall.stop()
    assert first not in townhall.output and second not in townhall.output
