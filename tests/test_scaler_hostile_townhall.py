"""The scaler against a townhall that lies, stalls or floods: a real HTTP server on 127.0.0.1
whose answers are hostile on purpose. Every call ends within its deadline with one clear
TownhallError, memory stays bounded, nothing is followed elsewhere, and the loop neither spins
nor serves another town. No Docker: the outposts are left unreachable where a pass needs them.
"""

from __future__ import annotations

import functools
import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import pytest

from tinytown.scaler.config import config_summary, load_config
from tinytown.scaler.errors import ConfigError, TownhallError
from tinytown.scaler.model import Config
from tinytown.scaler.report import Report
from tinytown.scaler.signal_reader import SignalReader
from tinytown.scaler.townhall import Townhall

ROOT = Path(__file__).resolve().parent.parent


def signal_body(town: str = "hostile", version: str = "v1", desired: int = 0) -> dict:
    return {
        "town": town,
        "timestamp": "2026-12-07T00:00:00+00:00",
        "queue_depth": 0,
        "pending_tasks": 0,
        "in_flight_tasks": 0,
        "active_agents": 0,
        "cold_agents": 0,
        "desired_agents": desired,
        "max_agents": 10,
        "scaling_recommendation": "steady",
        "version": version,
    }


@functools.cache
def gzip_bomb() -> bytes:
    """100 MB of JSON in a few hundred KB."""
    return gzip.compress(b'{"pad": "' + b"x" * (100 * 1024 * 1024) + b'"}', 1)


class Hostile:
    """One TCP server, its behaviour chosen by the request path's first part."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(32)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.paths: list[str] = []
        self.towns = 0
        self.closing = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.closing.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        try:
            request = b""
            while b"\r\n\r\n" not in request:
                got = conn.recv(4096)
                if not got:
                    return
                request += got
            path = request.split(b" ", 2)[1].decode()
            self.paths.append(path)
            getattr(self, "mode_" + path.strip("/").split("/")[0].replace("-", "_"))(conn, path)
        except OSError:
            pass
        finally:
            conn.close()

    def _send(self, conn, body: bytes, status: str = "200 OK", headers: str = "") -> None:
        conn.sendall(
            f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: "
            f"{len(body)}\r\nConnection: close\r\n{headers}\r\n".encode()
            + body
        )

    def mode_ok(self, conn, path):
        self._send(conn, json.dumps(signal_body()).encode())

    def mode_drip(self, conn, path):  # one byte a second, for ever
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n")
        while not self.closing.wait(1):
            conn.sendall(b" ")

    def mode_drip_headers(self, conn, path):
        while not self.closing.wait(1):
            conn.sendall(b"H")

    def mode_endless(self, conn, path):  # a chunked body without end, as fast as it goes
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n%s\r\n" % (65536, b"[" * 65536)
        while not self.closing.is_set():
            conn.sendall(chunk)

    def mode_big(self, conn, path):
        self._send(conn, b'{"pad": "' + b"x" * (3 * 1024 * 1024) + b'"}')

    def mode_gzip(self, conn, path):
        self._send(conn, gzip_bomb(), headers="Content-Encoding: gzip\r\n")

    def mode_nested(self, conn, path):
        self._send(conn, b"[" * 100_000 + b"]" * 100_000)

    def mode_redirect(self, conn, path):
        self._send(conn, b"", "302 Found", f"Location: {self.url}/ok/api/scaling\r\n")

    def mode_instant(self, conn, path):  # a long-poll answered at once, the same signal
        self._send(conn, json.dumps(signal_body()).encode())

    def mode_bad_town(self, conn, path):  # a name that would become a path or a volume
        self._send(conn, json.dumps(signal_body("../../etc")).encode())

    def mode_new_town(self, conn, path):  # another town each time, asking for many workers
        self.towns += 1
        self._send(conn, json.dumps(signal_body(f"t{self.towns}", desired=10_000)).encode())

    def close(self) -> None:
        self.closing.set()
        self.sock.close()


@pytest.fixture
def hostile():
    h = Hostile()
    yield h
    h.close()


def townhall(url: str, timeout: float = 2.0) -> Townhall:
    return Townhall(Config(url=url, http_timeout_secs=timeout))


@pytest.mark.parametrize(
    ("mode", "said"),
    [
        ("drip", "took over 2 s to answer"),
        ("drip-headers", "took over 2 s to answer"),
        ("endless", "answered with a body over"),
        ("big", "answered with a body over 1048576 bytes"),
        ("gzip", "answered with a 'gzip' body, which was not asked for"),
        ("nested", "a body that is not JSON"),
        ("redirect", "answered 302"),
    ],
)
def test_every_hostile_answer_ends_in_time_with_one_clear_error(hostile, mode, said):
    gzip_bomb()  # (made before memory is traced: the server's making of it is not the client's)
    tracemalloc.start()
    began = time.monotonic()
    with pytest.raises(TownhallError) as err:
        townhall(f"{hostile.url}/{mode}").scaling_signal()
    took = time.monotonic() - began
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert said in str(err.value)
    assert took < 2.0 + 1.5, took  # the deadline (the timeout), not the server, ends it
    assert peak < 16 * 1024 * 1024, peak  # the body cap, not the server, bounds memory
    assert all(p.startswith(f"/{mode}/") for p in hostile.paths)  # nothing followed elsewhere


def test_a_long_polls_deadline_is_its_wait_plus_the_timeout(hostile):
    began = time.monotonic()
    with pytest.raises(TownhallError, match="took over 3 s"):
        townhall(f"{hostile.url}/drip", timeout=1.0).scaling_signal(wait_secs=2, since="v0")
    assert 2.9 < time.monotonic() - began < 4.5


def test_the_scaler_serves_the_town_it_first_saw_and_no_other(hostile):
    reader = SignalReader(townhall(f"{hostile.url}/new-town"), hostile.url, None)
    first, second = Report(town=None), Report(town=None)
    assert reader.read(first, None).town == "t1"
    assert reader.read(second, None) is None
    assert "serves town 't2', not the town it served first 't1'" in second.error
    with pytest.raises(TownhallError, match="town='../../etc': expected a town name"):
        townhall(f"{hostile.url}/bad-town").scaling_signal()


def test_a_townhall_that_answers_the_long_poll_at_once_is_polled_not_spun(hostile, tmp_path):
    """It was asked 100 times in 5 s (no gap between passes); now every interval_secs."""
    env = dict(os.environ, DOCKER_HOST="unix:///nonexistent/docker.sock")
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "scaler.py"),
            "--url",
            f"{hostile.url}/instant",
            "--image",
            "tinytown-agent-worker:none",
            "--interval-secs",
            "10",
            "--state-file",
            str(tmp_path / "state.json"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(5)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    asked = [p for p in hostile.paths if p.startswith("/instant/api/scaling")]
    assert 2 <= len(asked) <= 4, len(asked)  # a pass, its long-poll answered at once, then a pass
    assert "event=signal_wait_unsupported" in err and err.count("signal_wait_unsupported") == 1


def test_secrets_in_the_url_or_the_key_file_never_reach_a_message(tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text("SECRETKEY-abc\n# rotated 2026-01\n")
    with pytest.raises(ConfigError) as err:
        load_config({"api_key_file": str(key_file)}, {})
    assert "SECRETKEY" not in str(err.value) and "one line" in str(err.value)

    config = load_config(
        {
            "url": "http://admin:hunter2@127.0.0.1:9/",
            "notify_webhook": "https://hooks.slack.com/services/T0/B0/SECRETPATH",
        },
        {},
    )
    shown = json.dumps(config_summary(config))
    assert "hunter2" not in shown and "SECRETPATH" not in shown
    with pytest.raises(TownhallError) as unreachable:
        Townhall(config).scaling_signal()
    assert "hunter2" not in str(unreachable.value) and "admin:****@" in str(unreachable.value)


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        ({"interval_secs": "1e10"}, "invalid interval_secs='1e10'"),
        ({"http_timeout_secs": "1e300"}, "invalid http_timeout_secs='1e300'"),
        ({"url": "http://127.0.0.1:99999"}, "invalid url="),
        ({"url": "http://:::"}, "invalid url="),
        ({"url": "http://a b"}, "invalid url="),
    ],
)
def test_values_that_would_crash_later_are_refused_at_once(flags, said):
    with pytest.raises(ConfigError, match=said):
        load_config(flags, {})
