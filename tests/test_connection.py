"""Connecting: PING, the 7.0 version rule, authentication failures, redaction in every message."""

from __future__ import annotations

import pytest

from tinytown.config import load_config
from tinytown.connection import connect, parse_version, version_supported
from tinytown.errors import RedisUnavailable

from .old_redis import OldRedis, closed_port


@pytest.mark.parametrize(
    "text,version,ok",
    [("7.0.0", (7, 0, 0), True), ("7.2.4", (7, 2, 4), True), ("8.0", (8, 0), True), ("9.1.2", (9, 1, 2), True),
     ("6.2.14", (6, 2, 14), False), ("", (), False), ("garbage", (), False)],
)  # fmt: skip
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
    from tests.conftest import free_port
    from tinytown.embedded import EmbeddedServer

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
    cfg = load_config(tmp_path, env={"REDIS_URL": f"redis://:wrong-pw@127.0.0.1:{password_server}/0"})
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
    (tmp_path / "tinytown.toml").write_text(f'[redis]\nuse_socket = false\nport = {password_server}\n')
    cfg = load_config(tmp_path, env={"TINYTOWN_REDIS_PASSWORD": "right-pw"})
    assert connect(cfg, start_server=False).ping() is True
