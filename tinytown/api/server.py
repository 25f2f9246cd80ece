"""Townhall's gunicorn worker: a request is read whole, on the event loop, before a thread
serves it.

gunicorn's gthread worker gives a connection to a pool thread once its first byte arrives, and
that thread reads the rest of the request from a blocking socket with no deadline: a few clients
that send half their headers or half their body hold every thread, and the API, probes included,
stops answering. :class:`BufferingWorker` keeps each connection on the worker's poller,
non-blocking, until its request has fully arrived: the event loop reads what is there into the
connection's buffer, and h11 (:mod:`.framing`) says where the request ends (Content-Length
or chunked). Only then does a pool thread get it, through the connection's own gunicorn parser,
whose source holds just that request's bytes: gunicorn's HTTP/WSGI path runs unchanged and never
reads the socket. Bytes behind the request (pipelining) wait in the buffer for the next round.
TLS handshakes run on the event loop too, non-blocking.

Answered on the socket with a problem document and ``Connection: close``, before any thread is
used: 408 (not arrived within ``[townhall] request_read_timeout_secs``), 413 (body over
``max_body_bytes``: as soon as Content-Length says so, or when chunked data passes it), 414
(request line over ``limit_request_line``), 431 (over ``limit_request_fields`` fields, one over
``limit_request_field_size``, or a head over both together), 400 (malformed) and 501 (a transfer
coding other than chunked). What gunicorn itself refuses while parsing in the thread goes through
:meth:`BufferingWorker.handle_error`, as a problem document too. The limits, the memory they
bound and what they do not cover: docs/api.md, "Limits and slow clients".
"""

from __future__ import annotations

import errno
import json
import math
import selectors
import socket
import ssl
import time
from datetime import datetime
from functools import partial
from http import HTTPStatus

import gunicorn
from gunicorn import sock as gsock
from gunicorn import util
from gunicorn.http import errors as gerrors
from gunicorn.http.parser import RequestParser
from gunicorn.http.wsgi import Response, default_environ
from gunicorn.workers import gthread

from tinytown.api.framing import DETAIL_MAX_CHARS, Rejected, RequestLimits, RequestReader
from tinytown.api.problems import problem_document
from tinytown.api.startup import refuse_to_start
from tinytown.config import load_config
from tinytown.core.errors import ConfigError, TinytownError

READ_CHUNK_BYTES = 64 * 1024
# After an error answer (or a response that closes the connection), what the client still sends
# is read and dropped for this long, so closing does not reset the answer before it is read.
CLOSE_LINGER_SECS = 2.0
CLOSE_LINGER_MAX_BYTES = 16 * 1024 * 1024
STOP_LINGER_SECS = 2.0  # a stopping worker keeps idle kept-alive connections this long
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def problem_response(status: int, detail: str) -> bytes:
    """A whole HTTP/1.1 response carrying a problem document, closing the connection."""
    body = json.dumps(problem_document(status, detail)).encode()
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        "Content-Type: application/problem+json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def _error_classes(*names: str) -> tuple:
    return tuple(
        getattr(gerrors, n) for n in names if hasattr(gerrors, n)
    )  # older gunicorns lack some


# The statuses gunicorn's own Worker.handle_error gives its parse errors (anything else is 400).
GUNICORN_ERROR_STATUS = (
    (_error_classes("InvalidResponseHeader", "InvalidResponseHeaderName"), 500),  # the app's fault
    (_error_classes("LimitRequestLine"), 414),
    (_error_classes("LimitRequestHeaders"), 431),
    (_error_classes("ExpectationFailed"), 417),
    (_error_classes("ForbiddenProxyRequest"), 403),
    (_error_classes("UnsupportedTransferCoding"), 501),
    (_error_classes("ConfigurationProblem"), 500),
    ((ssl.SSLError,), 403),
    ((gerrors.ParseException,), 400),
)


def gunicorn_error_status(exc: BaseException) -> int:
    return next(
        (status for classes, status in GUNICORN_ERROR_STATUS if isinstance(exc, classes)), 500
    )


class _Conn(gthread.TConn):
    """A connection and the request arriving on it; ``deadline`` is when the loop gives up."""

    def __init__(self, cfg, sock, client, server, limits: RequestLimits):
        super().__init__(cfg, sock, client, server)  # non-blocking from here on
        self.reader = RequestReader(limits)
        self.parser = RequestParser(cfg, (), client)  # its only source is what unread() gives it
        self.initialized = True  # gthread's handle() must neither wait for data nor wrap the socket
        self.handshaking = self.closing = self.closed = self.kept_alive = False
        self.deadline, self.events, self.lingered = math.inf, 0, 0


class BufferingWorker(gthread.ThreadWorker):
    """gunicorn's gthread worker, except that a pool thread only gets a request that has arrived."""

    @classmethod
    def check_config(cls, cfg, log):
        super().check_config(cfg, log)
        unsupported = [
            name
            for name, on in (
                ("http_protocols with h2", "h2" in (getattr(cfg, "http_protocols", None) or ())),
                (
                    "proxy_protocol",
                    getattr(cfg, "proxy_protocol", False) not in (False, None, "off"),
                ),
                ("protocol = uwsgi", getattr(cfg, "protocol", "http") != "http"),
            )
            if on
        ]
        if not hasattr(
            gthread, "PollableMethodQueue"
        ):  # gthread's event loop as this class extends it
            unsupported.append(f"gunicorn {gunicorn.__version__} (24 or newer is needed)")
        if unsupported:
            refuse_to_start(
                ConfigError(
                    "townhall's worker (tinytown.api.server.BufferingWorker) serves HTTP/1.x "
                    "and cannot run with "
                    + ", ".join(unsupported)
                    + "; change those gunicorn settings or upgrade gunicorn"
                )
            )

    def init_process(self):
        try:
            self.limits = RequestLimits.of(self.cfg, load_config().townhall)
        except TinytownError as err:
            refuse_to_start(err)
        self.intake: set[_Conn] = set()  # connections on the poller (not in a thread)
        self.serving: dict[_Conn, float] = {}  # connections in a thread, since when
        self.next_deadline = math.inf
        self.discard = bytearray(READ_CHUNK_BYTES)
        super().init_process()

    # --- the event loop: accept, handshake, read, answer or hand over -------------------------

    def accept(self, listener):
        try:
            sock, client = listener.accept()
        except OSError as err:
            if err.errno in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                return
            raise
        self.nr_conns += 1
        conn = _Conn(self.cfg, sock, client, listener.getsockname(), self.limits)
        if self.cfg.is_ssl:
            # gunicorn's context (certfile, keyfile, ca_certs, cert_reqs): per connection, as
            # gunicorn does
            try:
                conn.sock = gsock.ssl_context(self.cfg).wrap_socket(
                    sock,
                    server_side=True,
                    do_handshake_on_connect=False,
                    suppress_ragged_eofs=self.cfg.suppress_ragged_eofs,
                )
            except OSError:
                return self._close(conn)
            conn.handshaking = True
        self._wait(
            conn, self.limits.read_timeout_secs
        )  # the first request's deadline counts from accept
        self._watch(conn, selectors.EVENT_READ)

    def _on_ready(self, conn: _Conn, _fileobj=None) -> None:
        try:
            if conn.closed:  # an event of the same poll, for a connection closed meanwhile
                return
            if conn.closing:
                self._drain(conn)
            elif not conn.handshaking or self._handshake(conn):
                self._receive(conn)
        except Exception:
            self.log.exception("Error reading a request from %s", conn.client)
            self._close(conn)

    def _handshake(self, conn: _Conn) -> bool:
        try:
            conn.sock.do_handshake()
        except ssl.SSLWantReadError:
            self._watch(conn, selectors.EVENT_READ)
            return False
        except ssl.SSLWantWriteError:
            self._watch(conn, selectors.EVENT_WRITE)
            return False
        except (
            OSError
        ) as err:  # ssl.SSLError included: no certificate, a stranger's, not TLS at all
            self.log.debug("TLS handshake with %s failed: %s", conn.client, err)
            self._close(conn)
            return False
        conn.handshaking = False
        self._watch(conn, selectors.EVENT_READ)
        return True  # the client's first bytes may already sit decrypted in the TLS object

    def _receive(self, conn: _Conn) -> None:
        while True:
            try:
                data = conn.sock.recv(READ_CHUNK_BYTES)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return
            except OSError:
                return self._close(conn)
            if not data:  # the client is gone; half a request goes with it
                return self._close(conn)
            if conn.kept_alive:  # a new request begins: its own deadline
                conn.kept_alive = False
                self._wait(conn, self.limits.read_timeout_secs)
            conn.reader.buffer += data
            if not self._advance(conn):
                return
            if not self.cfg.is_ssl and len(data) < READ_CHUNK_BYTES:
                return  # TLS reads on until SSLWantRead: decrypted bytes do not wake the poller

    def _advance(self, conn: _Conn) -> bool:
        """Answer, hand over or keep reading (True) the request at the front of the buffer."""
        try:
            request = conn.reader.next_request()
        except Rejected as rejected:
            self._reject(conn, rejected.status, rejected.detail)
            return False
        if request is None:
            if conn.reader.take_continue():
                self._send(conn, CONTINUE)
            return True
        self._unwatch(conn)
        conn.parser.unreader.unread(request)
        self.serving[conn] = time.monotonic()
        self.enqueue_req(conn)  # → handle() in a pool thread → finish_request() back here
        return False

    def finish_request(self, conn: _Conn, fs) -> None:
        """Back on the event loop after a thread served a request: close, or read the next one."""
        self.serving.pop(conn, None)
        try:
            keep = not fs.cancelled() and fs.result() is True
        except Exception:  # noqa: BLE001
            # handle() reports its own errors; the connection just closes
            keep = False
        if keep and conn.parser.unreader.buf.getvalue():
            self.log.warning(
                "event=request_framing_mismatch peer=%s detail=gunicorn left bytes of the "
                "request h11 framed; closing",
                conn.client,
            )
            keep = False
        if not keep:
            return self._close(conn, linger=True)
        conn.sock.setblocking(False)
        if conn.reader.started:  # pipelined: the next request is already (partly) here
            self._wait(conn, self.limits.read_timeout_secs)
        else:
            conn.kept_alive = True
            self._wait(
                conn,
                self.cfg.keepalive if self.alive else min(self.cfg.keepalive, STOP_LINGER_SECS),
            )
        self._watch(conn, selectors.EVENT_READ)
        try:
            if conn.reader.started and not self._advance(conn):
                return
        except Exception:
            self.log.exception("Error reading a request from %s", conn.client)
            return self._close(conn)
        if self.cfg.is_ssl:
            self._on_ready(conn)  # the TLS object may hold bytes read before the hand-over

    # --- answers, deadlines, closing ------------------------------------------------------------

    def _reject(self, conn: _Conn, status: int, detail: str) -> None:
        self.log.warning(
            "event=request_rejected status=%d peer=%s detail=%s",
            status,
            conn.client,
            json.dumps(detail),
        )
        self._send(conn, problem_response(status, detail))
        self._close(conn, linger=True)

    def _send(self, conn: _Conn, data: bytes) -> None:
        try:  # small, on a connection that has not been answered yet: the socket buffer takes it
            conn.sock.send(data)
        except OSError as err:
            self.log.debug("could not write to %s: %s", conn.client, err)

    def _close(self, conn: _Conn, linger: bool = False) -> None:
        if conn.closed:
            return
        if linger and not conn.closing:
            # FIN after the answer; keep reading what the client still sends, so no RST eats it
            try:
                conn.sock.setblocking(False)
                conn.sock.shutdown(socket.SHUT_WR)
                conn.closing = True
                self._wait(conn, CLOSE_LINGER_SECS)
                self._watch(conn, selectors.EVENT_READ)
                return self._drain(conn)
            except OSError:
                pass
        self._unwatch(conn)
        conn.closed = True
        self.nr_conns -= 1
        util.close(conn.sock)

    def _drain(self, conn: _Conn) -> None:
        while True:
            try:
                n = conn.sock.recv_into(self.discard)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                n = 0
            conn.lingered += n
            if not n or conn.lingered > CLOSE_LINGER_MAX_BYTES:
                return self._close(conn)

    def _watch(self, conn: _Conn, events: int) -> None:
        if conn.events == events:
            return
        if conn.events:
            self.poller.modify(conn.sock, events, partial(self._on_ready, conn))
        else:
            self.poller.register(conn.sock, events, partial(self._on_ready, conn))
            self.intake.add(conn)
        conn.events = events

    def _unwatch(self, conn: _Conn) -> None:
        if conn.events:
            try:
                self.poller.unregister(conn.sock)
            except (KeyError, ValueError, OSError):
                pass
            conn.events = 0
        self.intake.discard(conn)

    def _wait(self, conn: _Conn, secs: float) -> None:
        conn.deadline = time.monotonic() + secs
        self.next_deadline = min(self.next_deadline, conn.deadline)

    def wait_for_and_dispatch_events(self, timeout):
        if self.next_deadline < math.inf:  # wake for the next deadline, not only once a second
            timeout = min(timeout, max(0.0, self.next_deadline - time.monotonic()))
        super().wait_for_and_dispatch_events(timeout)

    def notify(self):
        """The heartbeat gunicorn's arbiter watches, withheld while a request has run past
        gunicorn's ``timeout``: the arbiter then restarts this worker, as it did a sync worker
        stuck in one request (the event loop itself keeps beating, so nothing else would)."""
        since = min(self.serving.values(), default=math.inf)
        if time.monotonic() - since > self.cfg.timeout:
            self.log.error(
                "event=request_stuck detail=a request has run over %s s (gunicorn timeout); "
                "this worker stops reporting in and gunicorn restarts it",
                self.cfg.timeout,
            )
            return
        super().notify()

    def murder_keepalived(self, *args, **kwargs):
        """gthread calls this after every turn of its loop: also enforce the intake's deadlines."""
        super().murder_keepalived(*args, **kwargs)
        now = time.monotonic()
        if not self.alive:
            for conn in self.intake:
                if conn.kept_alive:
                    conn.deadline = min(conn.deadline, now + STOP_LINGER_SECS)
                    self.next_deadline = min(self.next_deadline, conn.deadline)
        if now < self.next_deadline:
            return
        self.next_deadline = math.inf
        for conn in list(self.intake):
            if conn.deadline > now:
                self.next_deadline = min(self.next_deadline, conn.deadline)
            elif conn.closing or conn.handshaking or not conn.reader.started:
                self._close(
                    conn
                )  # nothing of a request arrived (or it was answered): nothing to say
            else:
                self._reject(conn, 408, self.limits.detail(408))

    # --- in a pool thread ---------------------------------------------------------------------

    def handle_request(self, req, conn):
        if getattr(req, "_expected_100_continue", False):
            req._expected_100_continue = (
                False  # the body is already here: no 100 Continue from gunicorn
            )
        conn.sock.settimeout(
            self.limits.read_timeout_secs
        )  # a client that stops reading its response
        try:
            return super().handle_request(req, conn)
        except TimeoutError:
            self.log.warning(
                "event=response_write_timeout peer=%s detail=the client read no response for %s s",
                conn.client,
                self.limits.read_timeout_secs,
            )
            return False

    def handle_error(self, req, client, addr, exc):
        """What gunicorn refuses while parsing, as a problem document (gunicorn writes HTML)."""
        started, addr = datetime.now(), addr or ("", -1)
        status = gunicorn_error_status(exc)
        if status >= 500 and status != 501:
            self.log.exception("Error handling request %s", getattr(req, "uri", "(no URI read)"))
            detail = "internal error; the townhall log has the details"
        else:
            self.log.warning("Invalid request from ip=%s: %s", addr[0], exc)
            detail = f"{str(exc)[:DETAIL_MAX_CHARS]} (refused by gunicorn)"
            if status in (414, 431):
                detail = self.limits.detail(status)
        payload = problem_response(status, detail)
        if req is not None:
            environ = default_environ(req, client, self.cfg)
            environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = addr[0], str(addr[1])
            resp = Response(req, client, self.cfg)
            resp.status, resp.response_length = (
                f"{status} {HTTPStatus(status).phrase}",
                len(payload),
            )
            self.log.access(resp, req, environ, datetime.now() - started)
        try:
            client.settimeout(self.limits.read_timeout_secs)
            client.sendall(payload)
        except Exception:  # noqa: BLE001 - as gunicorn's own: the client may be gone already
            self.log.debug("Failed to send error message.")
