"""A tiny real RESP server that claims to be Redis 6.2 — for the version rule, nothing else.

It answers PING with PONG, INFO with a ``redis_version`` line and anything else with OK, over a
real TCP socket on loopback. Used as ``with OldRedis() as port: ...``.
"""

from __future__ import annotations

import socket
import socketserver
import threading


class _Handler(socketserver.StreamRequestHandler):
    version = "6.2.0"

    def _read_command(self) -> list[bytes] | None:
        line = self.rfile.readline()
        if not line:
            return None
        if not line.startswith(b"*"):
            return line.split()
        args = []
        for _ in range(int(line[1:])):
            size = int(self.rfile.readline()[1:])
            args.append(self.rfile.read(size + 2)[:-2])
        return args

    def handle(self) -> None:
        while (cmd := self._read_command()) is not None:
            name = cmd[0].upper() if cmd else b""
            if name == b"PING":
                self.wfile.write(b"+PONG\r\n")
            elif name == b"INFO":
                body = f"# Server\r\nredis_version:{self.version}\r\n".encode()
                self.wfile.write(b"$%d\r\n%s\r\n" % (len(body), body))
            else:
                self.wfile.write(b"+OK\r\n")


class OldRedis:
    def __enter__(self) -> int:
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self.server.server_address[1]

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def closed_port() -> int:
    """A loopback port with nothing listening on it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
