"""tinytown.toml: defaults, precedence, environment overrides and every kind of invalid value."""

from __future__ import annotations

import pytest

from tinytown.config import load_config, town_dir
from tinytown.connection.target import resolve_target
from tinytown.core import defaults
from tinytown.core.errors import ConfigError


def write(root, text):
    (root / "tinytown.toml").write_text(text)
    return root


def test_no_file_means_every_default_and_the_directory_name(tmp_path):
    root = tmp_path / "my town!"
    root.mkdir()
    cfg = load_config(root, env={})
    assert cfg.name == "my-town"
    assert cfg.file is None
    assert cfg.townhall.bind == "127.0.0.1" and cfg.townhall.rest_port == 8080
    assert cfg.agent.idle_timeout_secs == defaults.IDLE_TIMEOUT_SECS
    assert cfg.agent.heartbeat_interval_secs == defaults.HEARTBEAT_INTERVAL_SECS
    assert cfg.agent.claim_timeout_secs == defaults.CLAIM_TIMEOUT_SECS
    assert cfg.agent.idle_heartbeat_secs == 30  # 6 × the 5 s heartbeat
    assert cfg.agent.max_attempts == defaults.MAX_ATTEMPTS
    assert cfg.townhall.auth.mode == "none"
    assert resolve_target(cfg).url == f"unix://{root}/.tt/redis.sock"


def test_upstream_schema_is_read(tmp_path):
    write(
        tmp_path,
        """
name = "demo"
default_cli = "codex"
max_agents = 4
[redis]
use_socket = false
host = "10.1.2.3"
port = 6380
password = "pw"
tls_enabled = true
[townhall]
bind = "0.0.0.0"
rest_port = 9000
request_timeout_ms = 5000
[townhall.auth]
mode = "api_key"
api_key_hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA"
api_key_scopes = ["town.read"]
[[townhall.auth.keys]]
name = "ci"
hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA"
scopes = ["town.write"]
[townhall.tls]
enabled = true
cert_file = "c.pem"
key_file = "k.pem"
[townhall.mtls]
enabled = true
required = true
ca_file = "ca.pem"
[agent]
idle_timeout_secs = 0
[agent_clis.fake]
command = "python fake.py"
workdir = "sub"
env = { MODE = "quick" }
""",
    )
    cfg = load_config(tmp_path, env={})
    assert (cfg.name, cfg.default_cli, cfg.max_agents) == ("demo", "codex", 4)
    assert resolve_target(cfg).url == "rediss://:pw@10.1.2.3:6380/0"
    assert resolve_target(cfg).managed is False
    assert cfg.townhall.auth.keys[0].name == "ci" and cfg.townhall.auth.keys[0].scopes == (
        "town.write",
    )
    assert cfg.townhall.tls.cert_file == "c.pem" and cfg.townhall.mtls.required
    assert cfg.agent.idle_timeout_secs == 0
    fake = cfg.agent_clis["fake"]
    assert (fake.command, fake.workdir, dict(fake.env)) == (
        "python fake.py",
        "sub",
        {"MODE": "quick"},
    )


def test_redis_url_env_wins_over_the_file(tmp_path):
    write(tmp_path, '[redis]\nurl = "redis://file:6379/0"\n')
    cfg = load_config(tmp_path, env={"REDIS_URL": "redis://env:6379/1"})
    assert resolve_target(cfg).url == "redis://env:6379/1"


def test_file_url_wins_over_socket_and_tcp(tmp_path):
    write(tmp_path, '[redis]\nurl = "redis://file:6379/0"\nuse_socket = true\n')
    target = resolve_target(load_config(tmp_path, env={}))
    assert target.url == "redis://file:6379/0" and not target.managed


def test_blank_redis_url_env_is_ignored(tmp_path):
    cfg = load_config(tmp_path, env={"REDIS_URL": "  "})
    assert resolve_target(cfg).url.startswith("unix://")


def test_socket_wins_over_tcp_when_use_socket(tmp_path):
    write(tmp_path, '[redis]\nuse_socket = true\nhost = "10.0.0.1"\n')
    assert resolve_target(load_config(tmp_path, env={})).url.startswith("unix://")


def test_loopback_tcp_is_managed(tmp_path):
    write(tmp_path, "[redis]\nuse_socket = false\nport = 7777\n")
    target = resolve_target(load_config(tmp_path, env={}))
    assert target.url == "redis://127.0.0.1:7777/0" and target.managed


def test_password_env_overrides_the_file_password(tmp_path):
    write(tmp_path, '[redis]\nuse_socket = false\npassword = "file"\n')
    cfg = load_config(tmp_path, env={"TINYTOWN_REDIS_PASSWORD": "env"})
    assert resolve_target(cfg).url == "redis://:env@127.0.0.1:6379/0"


def test_container_variables_override(tmp_path):
    cfg = load_config(
        tmp_path,
        env={
            "TINYTOWN_TOWN_NAME": "docker",
            "TINYTOWN_REST_BIND": "0.0.0.0",
            "TINYTOWN_REST_PORT": "9999",
            "TINYTOWN_AGENT_CLI": "codex",
        },
    )
    assert (cfg.name, cfg.townhall.bind, cfg.townhall.rest_port, cfg.default_cli) == (
        "docker",
        "0.0.0.0",
        9999,
        "codex",
    )


def test_the_public_url_loses_its_trailing_slash_and_the_environment_wins(tmp_path):
    assert load_config(tmp_path, env={}).townhall.public_url is None
    write(tmp_path, "[townhall]\npublic_url = 'https://town.example.com/tt/'\n")
    assert load_config(tmp_path, env={}).townhall.public_url == "https://town.example.com/tt"
    env = {"TINYTOWN_PUBLIC_URL": "http://10.0.0.5:8080"}
    assert load_config(tmp_path, env=env).townhall.public_url == "http://10.0.0.5:8080"


def test_the_cli_from_the_environment_wins_over_a_file_that_names_one(tmp_path):
    """tt init writes default_cli; TINYTOWN_AGENT_CLI once made that key 'unknown'."""
    write(tmp_path, 'default_cli = "claude"\n')
    assert load_config(tmp_path, env={}).default_cli == "claude"
    assert load_config(tmp_path, env={"TINYTOWN_AGENT_CLI": "codex"}).default_cli == "codex"


def test_town_dir_precedence_flag_then_env_then_cwd(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    monkeypatch.chdir(b)
    assert town_dir(str(a), {"TINYTOWN_TOWN_DIR": str(b)}) == a
    assert town_dir(None, {"TINYTOWN_TOWN_DIR": str(a)}) == a
    assert town_dir(None, {}) == b


BAD_VALUES = [
    ("max_agents = -1", "max_agents = -1", "an integer ≥ 0"),
    ('max_agents = "ten"', "max_agents = 'ten'", "an integer ≥ 0"),
    ("name = 'bad name'", "name = 'bad name'", "1-100 characters"),
    ("[redis]\nport = 70000", "redis.port = 70000", "an integer from 1 to 65535"),
    ("[redis]\nuse_socket = 'yes'", "redis.use_socket = 'yes'", "true or false"),
    ("[redis]\nurl = 'http://x'", "redis.url = 'http://x'", "redis://, rediss:// or unix://"),
    ("[townhall]\nrest_port = 0", "townhall.rest_port = 0", "an integer from 1 to 65535"),
    ("[townhall]\nworkers = 0", "townhall.workers = 0", "an integer from 1 to 64"),
    (
        "[townhall.auth]\nmode = 'basic'",
        "townhall.auth.mode = 'basic'",
        '"none", "api_key", "oidc"',
    ),
    (
        "[townhall.auth]\napi_key_scopes = ['root']",
        "townhall.auth.api_key_scopes = ['root']",
        "a list of scopes",
    ),
    (
        "[townhall.auth]\napi_key_hash = 'plain'",
        "townhall.auth.api_key_hash = 'plain'",
        "Argon2id PHC string",
    ),
    (
        "[townhall.auth]\nmode = 'oidc'",
        "townhall.auth.issuer = None",
        'required when mode = "oidc"',
    ),
    (
        "[[townhall.auth.keys]]\nname = 'x'\nhash = 'nope'",
        "townhall.auth.keys[0].hash = 'nope'",
        "Argon2id",
    ),
    ("[townhall.tls]\nenabled = 1", "townhall.tls.enabled = 1", "true or false"),
    ("[agent]\nidle_timeout_secs = -5", "agent.idle_timeout_secs = -5", "an integer ≥ 0"),
    ("[agent]\nmax_attempts = 0", "agent.max_attempts = 0", "an integer ≥ 1"),
    (
        "[agent]\nheartbeat_interval_secs = 10\nclaim_timeout_secs = 5",
        "agent.claim_timeout_secs = 5",
        "more than heartbeat_interval_secs",
    ),
    (
        "[agent]\nheartbeat_interval_secs = 10\nidle_heartbeat_secs = 5",
        "agent.idle_heartbeat_secs = 5",
        "at least heartbeat_interval_secs (10)",
    ),
    ("[agent]\nidle_heartbeat_secs = 0", "agent.idle_heartbeat_secs = 0", "an integer ≥ 1"),
    *(
        (f"[townhall]\npublic_url = {value}", f"townhall.public_url = {shown}", "https://")
        for value, shown in (
            ("'town.example.com'", "'town.example.com'"),
            ("'ftp://town.example.com'", "'ftp://town.example.com'"),
            ("'https://town.example.com/?key=1'", "'https://town.example.com/?key=1'"),
            ("'https://town.example.com/#x'", "'https://town.example.com/#x'"),
            ("'https://town.example.com/a|b'", "'https://town.example.com/a|b'"),
            ("'https://me:pw@town.example.com'", "'https://me:****@town.example.com'"),
            ("'https:///nohost'", "'https:///nohost'"),
            (
                '"https://evil.example\\\\.town.example.com"',
                repr("https://evil.example\\.town.example.com"),
            ),
            ("'https://例え.jp/tt'", "'https://例え.jp/tt'"),
            ("'https://town.example.com:'", "'https://town.example.com:'"),
            ("8080", "8080"),
        )
    ),
    ("[agent_clis.x]\ncommand = ''", "agent_clis.x.command = ''", "a non-empty command line"),
    (
        "[agent_clis.x]\ncommand = 'x'\nenv = { A = 1 }",
        "agent_clis.x.env",
        'NAME = "value" strings',
    ),
]


@pytest.mark.parametrize("toml,names,form", BAD_VALUES, ids=[b[1] for b in BAD_VALUES])
def test_invalid_value_names_key_value_and_expected_form(tmp_path, toml, names, form):
    write(tmp_path, toml + "\n")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path, env={})
    assert names in str(err.value)
    assert form in str(err.value)
    assert str(tmp_path / "tinytown.toml") in str(err.value)


def test_unknown_key_is_named_with_the_accepted_ones(tmp_path):
    write(tmp_path, "[agent]\nidle_timeout_sec = 5\n")
    with pytest.raises(
        ConfigError,
        match=r"unknown key agent.idle_timeout_sec; \[agent\] accepts: .*idle_timeout_secs",
    ):
        load_config(tmp_path, env={})


def test_broken_toml_says_where(tmp_path):
    write(tmp_path, "name = \n")
    with pytest.raises(ConfigError, match=r"not valid TOML: .*line 1"):
        load_config(tmp_path, env={})


@pytest.mark.parametrize(
    "env,message",
    [
        ({"REDIS_URL": "http://:secret@h"}, "REDIS_URL='http://:****@h' is invalid"),
        (
            {"TINYTOWN_REST_PORT": "http"},
            "TINYTOWN_REST_PORT='http' is invalid; expected an integer from 1 to 65535",
        ),
        (
            {"TINYTOWN_PUBLIC_URL": "https://me:secret@town.example/"},
            "TINYTOWN_PUBLIC_URL='https://me:****@town.example/' is invalid; expected the http",
        ),
    ],
)
def test_invalid_environment_override_is_named(tmp_path, env, message):
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path, env=env)
    assert message in str(err.value)
    assert "secret" not in str(err.value)


def test_duplicate_key_names_are_refused(tmp_path):
    h = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA"
    write(
        tmp_path,
        f"[[townhall.auth.keys]]\nname='a'\nhash='{h}'\n[[townhall.auth.keys]]\nname='a'\nhash='{h}'\n",
    )
    with pytest.raises(ConfigError, match="unique key names"):
        load_config(tmp_path, env={})


def test_the_idle_heartbeat_follows_the_working_one_unless_set(tmp_path):
    write(tmp_path, "[agent]\nheartbeat_interval_secs = 2\n")
    assert load_config(tmp_path, env={}).agent.idle_heartbeat_secs == 12
    write(tmp_path, "[agent]\nheartbeat_interval_secs = 2\nidle_heartbeat_secs = 2\n")
    assert load_config(tmp_path, env={}).agent.idle_heartbeat_secs == 2  # one cadence
