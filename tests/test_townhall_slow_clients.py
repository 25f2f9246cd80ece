"""Slow and stalled clients against a real gunicorn (one worker): they never starve the API, they
are cut at ``[townhall] request_read_timeout_secs``, and every answer townhall or gunicorn gives
on its own — 408, 413, 414, 431, 400 — is a problem document."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import ssl
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from tinytown.api.server import Rejected, RequestLimits, RequestReader

from .conftest import BIN_DIR, CONFIG_ENV, free_port, write_town

READ_TIMEOUT_SECS = 2
MAX_BODY_BYTES = 4096
PROMPT_SECS = 1.0  # what "answers at once" means here, on two shared CPUs
STALLED_HEADERS = b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Half: "
STALLED_BODY = (
    b"POST /v1/backlog HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b"Content-Length: 100\r\n\r\n" + b'{"description": "half'
)


# --- a real townhall ----------------------------------------------------------------------------


@contextmanager
def townhall(root: Path, redis_url: str, tables: str = "", scheme: str = "http", **get_options):
    """gunicorn with the project's config, one worker, small limits, serving (its worker booted and
    warm); stopped by PID."""
    port = free_port()
    limits = f"max_body_bytes = {MAX_BODY_BYTES}\nrequest_read_timeout_secs = {READ_TIMEOUT_SECS}\n"
    write_town(
        root, redis_url, tables=f"[townhall]\nrest_port = {port}\nworkers = 1\n{limits}\n{tables}"
    )
    env = {k: v for k, v in os.environ.items() if k not in CONFIG_ENV}
    with open(root / "gunicorn.log", "w") as log:  # a file, not a pipe nobody drains
        proc = subprocess.Popen(
            [str(BIN_DIR / "gunicorn"), "-c", "python:tinytown.gunicorn_conf", "townhall:app"],
            cwd=root,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while not _serving(f"{scheme}://127.0.0.1:{port}", **get_options):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"townhall did not start: {(root / 'gunicorn.log').read_text()}")
            time.sleep(0.1)
        yield port
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def _serving(url: str, **get_options) -> bool:
    try:
        return all(
            requests.get(url + path, timeout=5, **get_options).ok
            for path in ("/livez", "/api/scaling")
        )
    except requests.ConnectionError:
        return False


@pytest.fixture(scope="module")
def port(tmp_path_factory, redis_url):
    with townhall(tmp_path_factory.mktemp("slow"), redis_url) as p:
        yield p


@pytest.fixture(scope="module")
def tls_port(tmp_path_factory, redis_url, pki):
    tls = f'[townhall.tls]\nenabled = true\ncert_file = "{pki / "server.pem"}"\nkey_file = "{pki / "server-key.pem"}"\n'
    with townhall(
        tmp_path_factory.mktemp("slow-tls"), redis_url, tls, "https", verify=str(pki / "ca.pem")
    ) as p:
        yield p


# --- raw HTTP -------------------------------------------------------------------------------------


def connect(port: int, sent: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(sent)
    return sock


def read_until_closed(sock: socket.socket, timeout: float) -> bytes:
    """Everything the server sends until it closes (or ``timeout`` passes: then what came)."""
    data, deadline = b"", time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, ssl.SSLWantReadError):
            break
        except (ConnectionResetError, ssl.SSLError):
            break
        if not chunk:
            break
        data += chunk
    return data


def responses(data: bytes) -> list[tuple[int, dict, bytes]]:
    """The complete HTTP/1.1 responses in ``data``, in order: (status, headers, body)."""
    out = []
    while b"\r\n\r\n" in data:
        head, rest = data.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        headers = {
            k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])
        }
        length = int(headers.get("content-length", 0))
        if len(rest) < length:
            break
        out.append((int(lines[0].split()[1]), headers, rest[:length]))
        data = rest[length:]
    return out


def read_responses(
    sock: socket.socket, count: int, timeout: float = 5
) -> list[tuple[int, dict, bytes]]:
    data, deadline = b"", time.monotonic() + timeout
    while len(responses(data)) < count and (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return responses(data)


def assert_problem(data: bytes, status: int) -> dict:
    """``data`` is one answer with ``status``, a problem document that closes the connection."""
    assert data, "the server closed without an answer"
    (got, headers, body), *_ = responses(data) or [(None, {}, data)]
    assert got == status, data[:300]
    assert headers["content-type"] == "application/problem+json", data[:300]
    assert headers.get("connection") == "close"
    doc = json.loads(body)
    assert doc["type"] == f"https://tinytown.dev/errors/{status}" and doc["status"] == status
    assert doc["title"] and doc["detail"]
    return doc


def exchange(port: int, sent: bytes, timeout: float = 5) -> bytes:
    with connect(port, sent) as sock:
        return read_until_closed(sock, timeout)


def assert_prompt(url: str, **kwargs) -> None:
    began = time.monotonic()
    resp = requests.get(url, timeout=PROMPT_SECS, **kwargs)
    assert resp.status_code == 200 and time.monotonic() - began < PROMPT_SECS


def stalled_clients(port: int) -> list[socket.socket]:
    """10 with half their headers sent, 10 with a body shorter than its Content-Length, 3 silent."""
    return (
        [connect(port, STALLED_HEADERS) for _ in range(10)]
        + [connect(port, STALLED_BODY) for _ in range(10)]
        + [connect(port) for _ in range(3)]
    )


# --- slow clients ---------------------------------------------------------------------------------


def test_stalled_clients_do_not_starve_livez_or_scaling(port):
    stalled = stalled_clients(port)
    try:
        for _ in range(3):
            assert_prompt(f"http://127.0.0.1:{port}/livez")
            assert_prompt(f"http://127.0.0.1:{port}/api/scaling")
    finally:
        for sock in stalled:
            sock.close()


def test_stalled_clients_get_408_after_the_read_timeout_and_silent_ones_are_closed(port):
    began = time.monotonic()
    stalled = stalled_clients(port)
    try:
        answers = [read_until_closed(sock, READ_TIMEOUT_SECS + 3) for sock in stalled]
    finally:
        for sock in stalled:
            sock.close()
    took = time.monotonic() - began
    assert READ_TIMEOUT_SECS - 0.5 < took < READ_TIMEOUT_SECS + 2.5
    for answer in answers[:20]:
        assert "request_read_timeout_secs" in assert_problem(answer, 408)["detail"]
    assert answers[20:] == [b""] * 3  # nothing of a request arrived: closed without an answer


def test_a_slow_drip_client_is_cut_at_the_deadline(port):
    request = STALLED_HEADERS + b"a" * 60 + b"\r\n\r\n"  # one byte every 0.5 s: 40 s in all
    sock, began, answer = connect(port), time.monotonic(), b""
    try:
        for byte in request:
            try:
                sock.send(bytes([byte]))
            except OSError:
                break
            if select.select([sock], [], [], 0.5)[0]:
                answer = read_until_closed(sock, 2)
                break
            if time.monotonic() - began > READ_TIMEOUT_SECS + 3:
                break
    finally:
        sock.close()
    assert_problem(answer, 408)
    assert time.monotonic() - began < READ_TIMEOUT_SECS + 2


# --- bodies over max_body_bytes, whatever the framing ---------------------------------------------


def post_chunked(port: int, pieces: list[bytes]) -> requests.Response:
    """POST /v1/backlog with ``Transfer-Encoding: chunked`` (requests chunks a generator)."""
    return requests.post(
        f"http://127.0.0.1:{port}/v1/backlog",
        data=iter(pieces),
        timeout=10,
        headers={"Content-Type": "application/json"},
    )


def test_a_chunked_body_over_the_limit_is_413(port):
    pieces = [b"x" * 65536] * 32  # a 2 MiB description, valid JSON once closed
    resp = post_chunked(port, [b'{"description": "', *pieces, b'"}'])
    assert resp.status_code == 413 and resp.headers["Content-Type"] == "application/problem+json"
    assert "max_body_bytes" in resp.json()["detail"]


def test_a_valid_object_padded_with_spaces_past_the_limit_chunked_is_413(port):
    resp = post_chunked(port, [b'{"description": "small"}', b" " * MAX_BODY_BYTES])
    assert resp.status_code == 413 and resp.json()["status"] == 413


def test_a_chunked_body_under_the_limit_is_accepted(port):
    resp = post_chunked(port, [b'{"description": ', b'"chunked and small"}'])
    assert resp.status_code == 201 and resp.json()["description"] == "chunked and small"


def test_a_chunked_body_over_the_limit_is_413_even_on_a_route_that_reads_no_body(port):
    resp = requests.get(
        f"http://127.0.0.1:{port}/api/scaling", data=iter([b"x" * MAX_BODY_BYTES, b"x"]), timeout=10
    )
    assert resp.status_code == 413 and resp.headers["Content-Type"] == "application/problem+json"


def test_a_body_too_large_for_its_100_continue_is_413_before_it_is_sent(port):
    head = (
        b"POST /v1/backlog HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY_BYTES + 1)
    )
    assert_problem(exchange(port, head), 413)


def test_a_client_waiting_for_100_continue_gets_it_once_then_its_answer(port):
    body = b'{"description": "asked first"}'
    with connect(
        port,
        b"POST /v1/backlog HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body),
    ) as sock:
        assert sock.recv(64) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        sock.settimeout(5)
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 201 ")


# --- errors gunicorn used to write as text/html ----------------------------------------------------


def test_a_request_line_over_limit_request_line_is_414(port):
    doc = assert_problem(
        exchange(port, b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"), 414
    )
    assert "limit_request_line" in doc["detail"]


def test_more_header_fields_than_limit_request_fields_is_431(port):
    fields = b"".join(b"X-Field-%d: 1\r\n" % i for i in range(101))
    doc = assert_problem(
        exchange(port, b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\n" + fields + b"\r\n"), 431
    )
    assert "limit_request_fields" in doc["detail"]


def test_a_header_field_over_limit_request_field_size_is_431(port):
    big = b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n"
    assert "limit_request_field_size" in assert_problem(exchange(port, big), 431)["detail"]


def test_a_garbage_request_line_is_400(port):
    assert "malformed" in assert_problem(exchange(port, b"GARBAGE\r\n\r\n"), 400)["detail"]


@pytest.mark.parametrize(
    "request_bytes, status",
    [
        (
            b"GET /livez HTTP/1.1\nHost: 127.0.0.1\n\n",
            400,
        ),  # bare LF: h11 lets it through, gunicorn does not
        (b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Folded: a\r\n b\r\n\r\n", 400),
        (b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: something\r\n\r\n", 417),
    ],
)
def test_what_gunicorn_refuses_while_parsing_is_a_problem_document(port, request_bytes, status):
    assert "refused by gunicorn" in assert_problem(exchange(port, request_bytes), status)["detail"]


# --- keep-alive and pipelining -------------------------------------------------------------------


def test_two_requests_on_one_kept_alive_connection(port):
    with connect(port, b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n") as sock:
        first = read_responses(sock, 1)
        sock.sendall(b"GET /api/scaling HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        second = read_responses(sock, 1)
    assert [r[0] for r in first + second] == [200, 200]
    assert json.loads(first[0][2])["status"] == "ok" and "desired_agents" in json.loads(
        second[0][2]
    )


def test_two_pipelined_requests_in_one_send_are_both_answered_in_order(port):
    body = b'{"description": "pipelined"}'
    sent = (
        b"POST /v1/backlog HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s"
        % (len(body), body)
        + b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    )
    with connect(port, sent) as sock:
        answers = read_responses(sock, 2)
    assert [a[0] for a in answers] == [201, 200]
    assert (
        json.loads(answers[0][2])["description"] == "pipelined"
        and json.loads(answers[1][2])["status"] == "ok"
    )


# --- TLS ------------------------------------------------------------------------------------------


def client_hello() -> bytes:
    """The first flight of a real TLS client, made without a server."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def tls_connect(port: int, pki: Path, sent: bytes) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    sock = context.wrap_socket(
        socket.create_connection(("127.0.0.1", port), timeout=5), server_hostname="127.0.0.1"
    )
    sock.sendall(sent)
    return sock


def test_stalled_tls_clients_do_not_starve_the_api(tls_port, pki):
    hello = client_hello()
    stalled = [connect(tls_port) for _ in range(5)] + [
        connect(tls_port, hello[: len(hello) // 2]) for _ in range(5)
    ]
    stalled += [tls_connect(tls_port, pki, STALLED_HEADERS) for _ in range(5)]
    try:
        for _ in range(3):
            assert_prompt(f"https://127.0.0.1:{tls_port}/livez", verify=str(pki / "ca.pem"))
            assert_prompt(f"https://127.0.0.1:{tls_port}/api/scaling", verify=str(pki / "ca.pem"))
    finally:
        for sock in stalled:
            sock.close()


def test_a_stalled_tls_client_gets_408_and_a_stalled_handshake_is_closed(tls_port, pki):
    half_hello = client_hello()[:40]
    with (
        tls_connect(tls_port, pki, STALLED_BODY) as tls,
        connect(tls_port, half_hello) as handshake,
    ):
        assert_problem(read_until_closed(tls, READ_TIMEOUT_SECS + 3), 408)
        assert read_until_closed(handshake, 3) == b""


# --- the reader alone: where a request ends --------------------------------------------------------


def reader() -> RequestReader:
    return RequestReader(RequestLimits(MAX_BODY_BYTES, READ_TIMEOUT_SECS, 4094, 100, 8190))


def test_the_reader_splits_pipelined_requests_exactly_however_the_bytes_arrive():
    chunked = (
        b"POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n"
    )
    sized = b"POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
    plain = b"GET /c HTTP/1.1\r\nHost: h\r\n\r\n"
    for step in (1, 7, 10_000):
        r, got, stream = reader(), [], chunked + sized + plain
        for i in range(0, len(stream), step):
            r.buffer += stream[i : i + step]
            while (request := r.next_request()) is not None:
                got.append(request)
        assert got == [chunked, sized, plain] and not r.started


def test_the_reader_refuses_a_chunked_body_the_moment_it_passes_the_limit():
    r = reader()
    r.buffer += b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    r.buffer += b"%x\r\n%s\r\n" % (MAX_BODY_BYTES, b"x" * MAX_BODY_BYTES)
    assert r.next_request() is None
    r.buffer += b"1\r\nx\r\n"
    with pytest.raises(Rejected) as rejected:
        r.next_request()
    assert rejected.value.status == 413
