"""A local webhook receiver: prints one line per notification, each once.

For trying ``[[notify]]`` webhooks without a server of your own (``tt notify listen``): it
answers every POST 200 and prints the notification's text, skipping a repeat of an
``Idempotency-Key`` it has already printed — the dedupe a real receiver does, because delivery
is at least once (docs/notifications.md). With a secret, a body whose signature does not match
is answered 401 and not printed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BODY_MAX_BYTES = 1024 * 1024


class Receiver(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, show: Callable[[str], None], secret: str | None = None):
        super().__init__(("127.0.0.1", port), _Handler)
        self.show, self.secret = show, secret
        self.seen: set[str] = set()
        self.received = 0  # distinct notifications printed
        self.lock = threading.Lock()

    def accept(self, key: str, body: bytes) -> None:
        with self.lock:
            if key and key in self.seen:
                return
            self.seen.add(key)
            self.received += 1
        self.show(describe(body))


def describe(body: bytes) -> str:
    """The line to print: a webhook's ``text`` and ``url`` (or a Slack body's text), else the
    body itself."""
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("text"), str):
        url = doc.get("url")
        return doc["text"] + (f" {url}" if isinstance(url, str) and url else "")
    return body.decode("utf-8", "replace").strip()


def signature_ok(secret: str, body: bytes, header: str | None) -> bool:
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return header is not None and hmac.compare_digest(expected, header)


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        length = int(self.headers.get("Content-Length") or 0)
        if length > BODY_MAX_BYTES:
            self.send_error(413)
            return
        body = self.rfile.read(length)
        if self.server.secret and not signature_ok(
            self.server.secret, body, self.headers.get("X-Tinytown-Signature")
        ):
            self.send_error(401, "bad signature")
            return
        self.server.accept(self.headers.get("Idempotency-Key") or "", body)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (http.server's name)
        pass  # one line per notification, nothing else
