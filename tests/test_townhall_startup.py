"""Townhall's start-up rules and the container API-key bootstrap (no server needed)."""

from __future__ import annotations

import stat
import tomllib

import pytest

from tinytown.api.startup import (
    bind_host,
    bootstrap_api_key,
    check_startup,
    set_auth_in_toml,
    startup_errors,
    townhall_config,
)
from tinytown.config import load_config
from tinytown.core.apikeys import verify_key
from tinytown.core.errors import ConfigError

from .conftest import write_town


def config_with(tmp_path, redis_url, tables=""):
    write_town(tmp_path, redis_url, tables=tables)
    return load_config(tmp_path, env={})


@pytest.mark.parametrize(
    "address, host",
    [
        ("0.0.0.0:8080", "0.0.0.0"),
        ("127.0.0.1:80", "127.0.0.1"),
        ("[::1]:8080", "::1"),
        ("unix:/tmp/s", "unix"),
        ("localhost", "localhost"),
    ],
)
def test_bind_host_reads_gunicorn_addresses(address, host):
    assert bind_host(address) == host


def test_non_loopback_bind_without_auth_refuses_with_the_fix(tmp_path, redis_url):
    config = config_with(tmp_path, redis_url)
    with pytest.raises(ConfigError) as err:
        check_startup(config, ["0.0.0.0:8080"])
    text = str(err.value)
    assert (
        "0.0.0.0" in text
        and 'mode = "api_key"' in text
        and "tt auth gen-key" in text
        and "127.0.0.1" in text
    )


def test_loopback_and_unix_binds_without_auth_are_fine(tmp_path, redis_url):
    config = config_with(tmp_path, redis_url)
    for binds in (
        ["127.0.0.1:8080"],
        ["[::1]:9"],
        ["localhost:1"],
        ["unix:/tmp/townhall.sock"],
        None,
    ):
        check_startup(config, binds)


def test_non_loopback_bind_with_api_key_auth_starts(tmp_path, redis_url):
    config = config_with(
        tmp_path,
        redis_url,
        '[townhall.auth]\nmode = "api_key"\napi_key_hash = "$argon2id$v=19$x"\n',
    )
    check_startup(config, ["0.0.0.0:8080"])


def test_tls_enabled_with_missing_files_refuses(tmp_path, redis_url):
    config = config_with(
        tmp_path, redis_url, '[townhall.tls]\nenabled = true\ncert_file = "nope.pem"\n'
    )
    errors = startup_errors(config)
    assert any("cert_file" in e and "nope.pem" in e for e in errors)
    assert any("key_file is unset" in e for e in errors)


def test_unreadable_tls_file_refuses(tmp_path, redis_url):
    (tmp_path / "cert.pem").write_text("x")
    (tmp_path / "key.pem").write_text("x")
    (tmp_path / "key.pem").chmod(0)
    config = config_with(
        tmp_path,
        redis_url,
        '[townhall.tls]\nenabled = true\ncert_file = "cert.pem"\nkey_file = "key.pem"\n',
    )
    import os

    if (
        os.geteuid() == 0
    ):  # root reads anything; a directory in place of the file is unreadable as a file
        (tmp_path / "key.pem").unlink()
        (tmp_path / "key.pem").mkdir()
    assert [e for e in startup_errors(config) if "key_file" in e]


def test_mtls_needs_a_ca_file_and_tls(tmp_path, redis_url):
    config = config_with(tmp_path, redis_url, "[townhall.mtls]\nrequired = true\n")
    errors = startup_errors(config)
    assert any("mTLS needs TLS" in e for e in errors) and any(
        "ca_file is unset" in e for e in errors
    )


def test_set_auth_in_toml_replaces_inserts_or_appends():
    assert 'mode = "api_key"' in set_auth_in_toml('name = "t"\n', "$argon2id$h")
    text = set_auth_in_toml(
        'name = "t"\n[townhall.auth]\nmode = "none"\n\n[agent]\nidle_timeout_secs = 5\n',
        "$argon2id$h",
    )
    data = tomllib.loads(text)
    assert data["townhall"]["auth"] == {"mode": "api_key", "api_key_hash": "$argon2id$h"}
    assert data["agent"]["idle_timeout_secs"] == 5


def test_bootstrap_makes_a_key_file_0600_and_configures_its_hash(tmp_path, redis_url):
    config = config_with(tmp_path, redis_url)
    env = {"TINYTOWN_BOOTSTRAP_API_KEY": "1"}
    new = bootstrap_api_key(config, env, ["0.0.0.0:8080"])
    key_file = tmp_path / ".townhall-api-key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    raw = key_file.read_text().strip()
    assert len(raw) == 64 and new.townhall.auth.mode == "api_key"
    assert verify_key(new.townhall.auth.api_key_hash, raw)
    assert raw not in (tmp_path / "tinytown.toml").read_text()
    again = bootstrap_api_key(new, env, ["0.0.0.0:8080"])  # idempotent: the key stays
    assert again.townhall.auth.api_key_hash == new.townhall.auth.api_key_hash
    assert key_file.read_text().strip() == raw


def test_bootstrap_configures_the_key_an_earlier_bootstrap_left_in_its_file(tmp_path, redis_url):
    # compose.yaml keeps the key on its own volume: a fresh tinytown.toml must not orphan it.
    key_file = tmp_path / "secrets" / "api-key"
    env = {"TINYTOWN_BOOTSTRAP_API_KEY": "1", "TINYTOWN_TOWNHALL_API_KEY_PATH": str(key_file)}
    first = bootstrap_api_key(config_with(tmp_path, redis_url), env, ["0.0.0.0:8080"])
    raw = key_file.read_text().strip()

    again = bootstrap_api_key(config_with(tmp_path, redis_url), env, ["0.0.0.0:8080"])

    assert again.townhall.auth.api_key_hash != first.townhall.auth.api_key_hash  # a new salt
    assert verify_key(again.townhall.auth.api_key_hash, raw)
    assert key_file.read_text().strip() == raw
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_bootstrap_refuses_a_key_file_that_holds_no_key(tmp_path, redis_url):
    key_file = tmp_path / "api-key"
    key_file.write_text("not a key\n")
    env = {"TINYTOWN_BOOTSTRAP_API_KEY": "1", "TINYTOWN_TOWNHALL_API_KEY_PATH": str(key_file)}

    with pytest.raises(ConfigError, match=r"does not hold an API key .*remove it"):
        bootstrap_api_key(config_with(tmp_path, redis_url), env, ["0.0.0.0:8080"])

    assert key_file.read_text() == "not a key\n"
    assert 'mode = "api_key"' not in (tmp_path / "tinytown.toml").read_text()


def test_bootstrap_does_nothing_on_loopback_without_the_flag_or_with_auth(tmp_path, redis_url):
    config = config_with(tmp_path, redis_url)
    assert (
        bootstrap_api_key(config, {"TINYTOWN_BOOTSTRAP_API_KEY": "1"}, ["127.0.0.1:8080"]) is config
    )
    assert bootstrap_api_key(config, {}, ["0.0.0.0:8080"]) is config
    assert not (tmp_path / ".townhall-api-key").exists()


def test_townhall_config_bootstraps_then_passes_the_rules(tmp_path, redis_url):
    write_town(tmp_path, redis_url)
    custom = tmp_path / "secrets" / "key"
    env = {
        "TINYTOWN_BOOTSTRAP_API_KEY": "1",
        "TINYTOWN_REST_BIND": "0.0.0.0",
        "TINYTOWN_TOWNHALL_API_KEY_PATH": str(custom),
    }
    config = townhall_config(tmp_path, env)
    assert config.townhall.auth.mode == "api_key" and custom.exists()


def test_townhall_config_refuses_an_exposed_town_without_the_bootstrap_flag(tmp_path, redis_url):
    write_town(tmp_path, redis_url)
    with pytest.raises(ConfigError, match="refuses to start"):
        townhall_config(tmp_path, {"TINYTOWN_REST_BIND": "0.0.0.0"})
