"""A whole town for scaler tests and the scaler benchmark: Redis over TCP, a real townhall, and
the settings that make ``scaler.py`` start real agent-worker containers against them.

Worker containers run with host networking, so everything they reach stays on loopback: the
town's managed Redis (TCP, password, bound to 127.0.0.1) and nothing else. Each container mounts
the town's *worker directory* at ``/workspace`` (the image's ``TINYTOWN_TOWN_DIR``): its
``tinytown.toml`` carries short agent intervals and the fake coding CLI (``tests/fake_cli.py``,
copied next to it). Its ``.tt`` (git checkouts, task logs) is the scaler's default workspace
volume, shared by the town's workers. ``REDIS_URL`` reaches the containers the way it does in
production: through the scaler's ``--env``.

``FakeTown`` is the other kind of town: its townhall is a ``FakeTownhall``, a real HTTP server
on loopback with canned answers, for what a real town cannot be made to do on cue (an agent that
turns busy between two reads, an agent list without the container's agent), which also receives
notification webhooks; its workers are a plain command in the worker image (``sleep 300``: Docker
reports it unhealthy, as it writes no health file; ``HEARTBEATING_COMMAND``: healthy).

Used by ``tests/test_scaler_docker.py``, ``tests/test_scaler_cli.py`` and
``bench/bench_scaler.py``.
"""

from __future__ import annotations

import http.server
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests

from tinytown.config import load_config
from tinytown.connection.embedded import EmbeddedServer
from tinytown.store import Town

from .secrets_seen import remember

# bench/bench_scaler.py imports poll under its old name from here.

REPO_ROOT = Path(__file__).resolve().parent.parent
SCALER = REPO_ROOT / "scaler.py"
FAKE_CLI = Path(__file__).resolve().parent / "fake_cli.py"
BIN_DIR = Path(sys.executable).parent
WORKER_TOWN_MOUNT = "/workspace"  # the image's TINYTOWN_TOWN_DIR
TOWNHALL_READY_TIMEOUT_SECS = 30.0
TOWNHALL_STOP_TIMEOUT_SECS = 10.0

# Worker timings for tests: a heartbeat a second, idle exit after a few seconds.
FAST_AGENT = {
    "idle_timeout_secs": 3,
    "heartbeat_interval_secs": 1,
    "claim_timeout_secs": 3,
    "drain_timeout_secs": 5,
    "task_timeout_secs": 120,
    "max_attempts": 3,
}

# A FakeTown worker that heartbeats like a real one as far as Docker can see: it writes the health
# file the scaler's healthcheck reads (tinytown.worker.health_file, the worker's own writer) every second,
# so its container turns healthy, while townhall knows nothing of it.
HEARTBEATING_COMMAND = (
    "python -P -c 'import time\nfrom tinytown.worker.health_file import HealthFile\n"
    "beats = HealthFile.from_env(1)\nwhile True:\n    beats.beat()\n    time.sleep(1)\n'"
)

# Environment that would change a townhall's or worker's configuration behind the test's back.
CONFIG_ENV = (
    "REDIS_URL",
    "TINYTOWN_REDIS_PASSWORD",
    "TINYTOWN_TOWN_DIR",
    "TINYTOWN_TOWN_NAME",
    "TINYTOWN_REST_BIND",
    "TINYTOWN_REST_PORT",
    "TINYTOWN_AGENT_CLI",
    "DOCKER_HOST",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeTownhall:
    """A real HTTP server on 127.0.0.1 answering GETs with canned JSON and recording POSTs.

    ``routes[path]`` is ``(status, body)``, or a list of them answered in turn (the last one
    repeats); a str body is sent as is. ``delays[path]`` holds a GET back that many seconds (or
    until ``close``). ``gets`` lists the paths asked for; ``posts`` collects ``(path, headers,
    body)`` of every POST, answered 204.
    """

    def __init__(self):
        self.routes: dict[str, Any] = {}
        self.delays: dict[str, float] = {}
        self.gets: list[str] = []
        self.posts: list[tuple[str, dict[str, str], bytes]] = []
        self.closing = threading.Event()
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                fake.gets.append(self.path)
                status, body = fake.answer(self.path)
                fake.closing.wait(fake.delays.get(self.path, 0.0))
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up waiting

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fake.posts.append((self.path, dict(self.headers), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, path: str) -> tuple[int, Any]:
        route = self.routes.get(path, (404, {"title": "Not Found"}))
        if isinstance(route, list):
            return route.pop(0) if len(route) > 1 else route[0]
        return route

    def close(self) -> None:
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()


class TcpRedis:
    """The project's managed Redis in TCP mode: 127.0.0.1, a free port, a random password."""

    def __init__(self, root: Path):
        self.port, self.password = free_port(), remember(secrets.token_hex(16))
        root.mkdir(parents=True, exist_ok=True)
        (root / "tinytown.toml").write_text(
            f'name = "scaler-redis"\n\n[redis]\nuse_socket = false\nbind = "127.0.0.1"\n'
            f'port = {self.port}\npassword = "{self.password}"\n'
        )
        self.server = EmbeddedServer(load_config(root, env={}))
        self.url = f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def start(self) -> TcpRedis:
        self.server.ensure_running()
        return self

    def stop(self) -> None:
        self.server.stop()


def _toml_value(value: Any) -> str:
    return json.dumps(value)


def town_toml(name: str, agent: dict[str, Any], redis_url: str | None = None) -> str:
    lines = [f"name = {_toml_value(name)}", 'default_cli = "fake"', ""]
    if redis_url:
        lines += ["[redis]", f"url = {_toml_value(redis_url)}", "", "[townhall]", "workers = 1", ""]
    lines += ["[agent]"] + [f"{k} = {_toml_value(v)}" for k, v in agent.items()] + [""]
    lines += ["[agent_clis.fake]", f'command = "python {WORKER_TOWN_MOUNT}/fake_cli.py"', ""]
    return "\n".join(lines)


class TownhallProcess:
    """``gunicorn -c python:tinytown.gunicorn_conf townhall:app`` for one town, stopped by PID."""

    def __init__(self, town_dir: Path, log_path: Path):
        self.town_dir, self.log_path = town_dir, log_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> TownhallProcess:
        env = {k: v for k, v in os.environ.items() if k not in CONFIG_ENV}
        env.update(TINYTOWN_TOWN_DIR=str(self.town_dir), TINYTOWN_REST_PORT=str(self.port))
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(BIN_DIR / "gunicorn"), "-c", "python:tinytown.gunicorn_conf", "townhall:app"],
                cwd=self.town_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + TOWNHALL_READY_TIMEOUT_SECS
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"townhall exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            try:
                if requests.get(self.url + "/api/scaling", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(
            f"townhall did not answer on {self.url} within "
            f"{TOWNHALL_READY_TIMEOUT_SECS:g} s:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=TOWNHALL_STOP_TIMEOUT_SECS)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=TOWNHALL_STOP_TIMEOUT_SECS)

    def log_tail(self, size: int = 3000) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text[-size:]


def new_town_name() -> str:
    return f"sc-{uuid.uuid4().hex[:10]}"


class ScaledTown:
    """What every test town offers for driving the scaler; subclasses give ``name``,
    ``state_file`` and ``own_settings()``."""

    name: str
    state_file: Path

    def own_settings(self) -> dict[str, Any]:
        raise NotImplementedError

    def settings(self, **overrides: Any) -> dict[str, Any]:
        """Scaler settings (Config keys) for this town; lists for repeatable flags; an override
        of None drops a setting."""
        values = {**self.own_settings(), **overrides}
        return {k: v for k, v in values.items() if v is not None}

    def scaler(self, config_file: Path | None = None, **overrides: Any):
        """An in-process ``Scaler``; ``.run_pass(time.time())`` is one pass."""
        from tinytown.scaler.config import load_config as load_scaler_config
        from tinytown.scaler.reconcile import Scaler

        flags = {
            k: ([str(x) for x in v] if isinstance(v, list) else str(v))
            for k, v in self.settings(**overrides).items()
        }
        flags["config"] = str(config_file) if config_file else None
        environ = {
            k: v
            for k, v in os.environ.items()
            if k not in CONFIG_ENV and not k.startswith("TINYTOWN_SCALER_")
        }
        return Scaler(load_scaler_config(flags, environ), environ)

    def cli_args(self, config_file: Path | None = None, **overrides: Any) -> list[str]:
        """``python scaler.py`` options for the same settings."""
        args: list[str] = ["--config", str(config_file)] if config_file else []
        for key, value in self.settings(**overrides).items():
            option = {"volumes": "--volume"}.get(key, "--" + key.replace("_", "-"))
            for item in value if isinstance(value, list) else [value]:
                args += [option, str(item)]
        return args

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run ``python scaler.py ARGS`` (put subcommands and modes first)."""
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in CONFIG_ENV and not k.startswith("TINYTOWN_SCALER_")
        }
        return subprocess.run(
            [sys.executable, str(SCALER), *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
        )

    # -- what runs ----------------------------------------------------------------------------

    def containers(self, client: docker.DockerClient) -> list:
        """This town's worker containers (live and exited), found by label."""
        # ignore_removed: the scaler may remove an exited one between the list and its inspect
        return client.containers.list(
            all=True, filters={"label": f"tinytown.town={self.name}"}, ignore_removed=True
        )

    def volumes(self, client: docker.DockerClient) -> list:
        """This town's workspace volumes, found by label."""
        return client.volumes.list(filters={"label": f"tinytown.town={self.name}"})

    def remove_containers(self, client: docker.DockerClient) -> None:
        """Remove this town's containers, then its volumes (by label, never more)."""
        for container in self.containers(client):
            try:
                container.remove(force=True, v=True)
            except docker.errors.NotFound:
                pass
        for volume in self.volumes(client):
            try:
                volume.remove(force=True)
            except docker.errors.NotFound:
                pass


@dataclass
class ScalerTown(ScaledTown):
    """One town (unique name) on a shared TCP Redis, with its townhall and worker directory.

    ``settings()`` are the scaler settings that drive workers for this town; pass them to
    :meth:`scaler` (in-process passes) or :meth:`cli` (``python scaler.py`` as a process).
    """

    root: Path
    redis_url: str
    image: str
    agent: dict[str, Any] = field(default_factory=dict)
    name: str = field(default_factory=new_town_name)

    def __post_init__(self) -> None:
        agent = {**FAST_AGENT, **self.agent}
        self.host_dir = self.root / "town"
        self.worker_dir = self.root / "worker-town"
        self.state_file = self.root / "scaler" / "state.json"
        for d in (self.host_dir, self.worker_dir, self.state_file.parent):
            d.mkdir(parents=True, exist_ok=True)
        (self.host_dir / "tinytown.toml").write_text(town_toml(self.name, agent, self.redis_url))
        (self.worker_dir / "tinytown.toml").write_text(town_toml(self.name, agent))
        shutil.copy(FAKE_CLI, self.worker_dir / "fake_cli.py")
        # The worker runs as uid 10001 and writes its task logs under the town directory.
        self.worker_dir.chmod(0o777)
        self.townhall = TownhallProcess(self.host_dir, self.root / "townhall.log")
        self.town: Town | None = None

    def start(self) -> ScalerTown:
        self.townhall.start()
        self.town = Town.connect(load_config(self.host_dir, env={}))
        return self

    def stop(self, client: docker.DockerClient | None) -> None:
        if client is not None:
            self.remove_containers(client)
        self.townhall.stop()
        if self.town is not None:
            self.town.redis.close()

    def own_settings(self) -> dict[str, Any]:
        """Workers reach the town's Redis over host networking and get the scaler's default
        workspace volume."""
        return {
            "url": self.townhall.url,
            "town": self.name,
            "image": self.image,
            "network": "host",
            "volumes": [f"{self.worker_dir}:{WORKER_TOWN_MOUNT}"],
            "env": [f"REDIS_URL={self.redis_url}"],
            "state_file": str(self.state_file),
            "http_timeout_secs": 5,
            "docker_timeout_secs": 60,
            "heartbeat_interval_secs": FAST_AGENT["heartbeat_interval_secs"],
        }


def agent_item(agent_id: str, state: str = "Idle", task: str | None = None) -> dict[str, Any]:
    """One ``GET /v1/agents`` entry with a heartbeat from just now."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return {
        "id": agent_id,
        "name": agent_id[:8],
        "state": state,
        "current_task": task,
        "last_heartbeat": now,
    }


@dataclass
class FakeTown(ScaledTown):
    """A town served by a FakeTownhall: its signal and agent list are what the test sets, and its
    workers are a plain ``command`` in the worker image (no Redis, no agent). Workers get no
    workspace volume unless a test asks for one."""

    root: Path
    image: str
    command: str = "sleep 300"
    name: str = field(default_factory=new_town_name)

    def __post_init__(self) -> None:
        self.state_file = self.root / "scaler" / "state.json"
        self.townhall = FakeTownhall()
        self.signal(desired=0, recommendation="steady")
        self.agents()

    def signal(
        self,
        desired: int,
        recommendation: str = "scale_up",
        active: int = 0,
        busy: int | None = None,
    ) -> None:
        """``GET /api/scaling`` answers this; ``active``/``busy`` are its agent counts (busy_agents
        left out when None, as an upstream townhall does)."""
        body = {
            "town": self.name,
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "queue_depth": desired,
            "pending_tasks": desired,
            "in_flight_tasks": 0,
            "active_agents": active,
            "cold_agents": 0,
            "desired_agents": desired,
            "max_agents": 10,
            "scaling_recommendation": recommendation,
        }
        if busy is not None:
            body["busy_agents"] = busy
        self.townhall.routes["/api/scaling"] = (200, body)

    def agents(self, *answers: list[dict[str, Any]]) -> None:
        """``GET /v1/agents`` answers these agent lists in turn (the last one repeats)."""
        self.townhall.routes["/v1/agents"] = [
            (200, {"agents": items, "count": len(items)}) for items in answers or ([],)
        ]

    def stop(self, client: docker.DockerClient) -> None:
        self.remove_containers(client)
        self.townhall.close()

    def own_settings(self) -> dict[str, Any]:
        return {
            "url": self.townhall.url,
            "town": self.name,
            "image": self.image,
            "command": self.command,
            "workspace_volume": "none",
            "state_file": str(self.state_file),
            "http_timeout_secs": 5,
            "docker_timeout_secs": 60,
            "heartbeat_interval_secs": 1,  # how often Docker runs the healthcheck
        }
