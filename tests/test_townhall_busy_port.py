"""A second townhall on a busy port: exit 6 with one line that says what to do, no traceback, and
no five seconds of gunicorn retrying first."""

from __future__ import annotations

import os
import socket
import subprocess
import time

import pytest

from tinytown.api.startup import check_addresses_free
from tinytown.core.errors import AddressInUse, ExitStatus

from .conftest import BIN_DIR, free_port, write_town

RUN_COMMAND = ["gunicorn", "-c", "python:tinytown.gunicorn_conf", "townhall:app"]


def busy_line(port: int) -> str:
    return (
        f"townhall: 127.0.0.1:{port} is in use (another townhall?); stop it or set "
        "[townhall] rest_port / TINYTOWN_REST_PORT"
    )


@pytest.fixture
def held_port():
    """A port some other process listens on (here: a plain socket)."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        yield held.getsockname()[1]


def test_townhall_on_a_busy_port_exits_6_with_one_line_and_no_traceback(
    tmp_path, redis_url, held_port
):
    root = write_town(tmp_path, redis_url)
    env = {
        "PATH": str(BIN_DIR),
        "HOME": os.environ.get("HOME", "/tmp"),
        "TINYTOWN_REST_PORT": str(held_port),
    }
    began = time.monotonic()
    result = subprocess.run(
        [str(BIN_DIR / RUN_COMMAND[0]), *RUN_COMMAND[1:]],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == ExitStatus.ADDRESS_IN_USE == 6, (result.stdout, result.stderr)
    refusals = [line for line in result.stderr.splitlines() if line.startswith("townhall:")]
    assert refusals == [busy_line(held_port)], result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert "Connection in use" not in result.stderr  # refused before gunicorn tried to bind
    assert time.monotonic() - began < 5  # gunicorn alone retries for 5 s, then exits 1


def test_a_free_port_unix_sockets_and_inherited_fds_pass():
    check_addresses_free([("127.0.0.1", free_port()), "/tmp/townhall.sock", 3])


def test_a_busy_port_is_an_address_in_use_error(held_port):
    with pytest.raises(AddressInUse) as err:
        check_addresses_free([("127.0.0.1", held_port)])
    assert err.value.exit_status == 6
    assert f"townhall: {err.value}" == busy_line(held_port)
