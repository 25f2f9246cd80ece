"""A tiny real RESP server that answers as Redis 6.2 does — for the version rule, nothing else.

It speaks what a client says while connecting, the way Redis 6.2.0 answers it:

- ``HELLO [2|3] [AUTH user pass] [SETNAME name]``: the server map (RESP3, after which the
  connection speaks RESP3) or the same pairs as an array (RESP2); 6.2 has had ``HELLO`` since 6.0;
- ``AUTH``, ``SELECT``, ``CLIENT SETNAME`` → ``+OK``; ``CLIENT SETINFO`` (new in 7.2) → the
  unknown-subcommand error 6.2 gives;
- ``PING`` → ``+PONG``; ``INFO`` → a ``redis_version`` line (a verbatim string under RESP3, as
  6.2 sends it); anything else → 6.2's unknown-command error.

Over a real TCP socket on loopback. Used as ``with OldRedis() as port: ...``.
"""

from __future__ import annotations

import socket
import socketserver
import threading

VERSION = "6.2.0"


def _bulk(text: str) -> bytes:
    data = text.encode()
    return b"$%d\r\n%s\r\n" % (len(data), data)


class _Handler(socketserver.StreamRequestHandler):
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

    def _hello(self, args: list[bytes]) -> bytes:
        if args and args[0] not in (b"2", b"3"):
            return b"-NOPROTO unsupported protocol version\r\n"
        if args:
            self.resp3 = args[0] == b"3"
        pairs = [
            ("server", _bulk("redis")),
            ("version", _bulk(VERSION)),
            ("proto", b":%d\r\n" % (3 if self.resp3 else 2)),
            ("id", b":7\r\n"),
            ("mode", _bulk("standalone")),
            ("role", _bulk("master")),
            ("modules", b"*0\r\n"),
        ]
        head = b"%%%d\r\n" % len(pairs) if self.resp3 else b"*%d\r\n" % (2 * len(pairs))
        return head + b"".join(_bulk(key) + value for key, value in pairs)

    def _answer(self, cmd: list[bytes]) -> bytes:
        name = cmd[0].upper() if cmd else b""
        sub = cmd[1].upper() if len(cmd) > 1 else b""
        if name == b"HELLO":
            return self._hello(cmd[1:])
        if name == b"PING":
            return b"+PONG\r\n"
        if name in (b"AUTH", b"SELECT") or (name == b"CLIENT" and sub == b"SETNAME"):
            return b"+OK\r\n"
        if name == b"CLIENT":
            return (
                b"-ERR Unknown subcommand or wrong number of arguments for '%s'. Try CLIENT HELP.\r\n"
                % cmd[1].lower()
            )
        if name == b"INFO":
            body = f"# Server\r\nredis_version:{VERSION}\r\nredis_mode:standalone\r\n".encode()
            if self.resp3:
                return b"=%d\r\ntxt:%s\r\n" % (len(body) + 4, body)
            return b"$%d\r\n%s\r\n" % (len(body), body)
        shown = cmd[0].decode(errors="replace") if cmd else ""
        return f"-ERR unknown command `{shown}`, with args beginning with: \r\n".encode()

    def handle(self) -> None:
        self.resp3 = False
        while (cmd := self._read_command()) is not None:
            self.wfile.write(self._answer(cmd))


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
