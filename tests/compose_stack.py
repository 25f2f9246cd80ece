"""compose.yaml's stack, driven the way a user drives it: the compose tool on the repository's
compose.yaml, the REST API on the published port, ``docker compose exec`` into the townhall.

``ComposeStack`` runs ``docker compose`` (the plugin) or Debian's ``docker-compose`` (v1), whichever
answers, with a project, town, network, workspace volume and image tag of its own, so that it
never touches a user's stack on the same engine. Redis comes from the local stand-in image, named
by compose.yaml's own ``TINYTOWN_REDIS_IMAGE`` as a user without a registry would (no registry to
pull ``redis:7`` from; ``.ci/docker-engine.sh`` builds it). The only departures from compose.yaml
are in a small override file, for what tests must track: the images it builds carry the test
label and this checkout's stage label (pruned like ``docker_support.build_image``'s). ``remove`` deletes everything it made, by project label, town
label and its own image tags.

Used by ``tests/test_stack_e2e.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests

from .docker_support import (
    BASE_IMAGE,
    REPO_ROOT,
    STAGE,
    TEST_LABEL,
    ensure_wheelhouse,
    remove_stale_stages,
)

COMPOSE_FILE = REPO_ROOT / "compose.yaml"
REDIS_IMAGE = os.environ.get("TINYTOWN_REDIS_IMAGE", "tinytown-redis:bookworm")
DOCKER_SOCKET = Path("/var/run/docker.sock")  # what compose.yaml mounts into the scaler
IMAGES = ("townhall", "scaler", "agent-worker")  # tinytown-<name>:<tag>
BUILT_SERVICES = ("townhall", "scaler", "agent-worker")
BUILD_TIMEOUT_SECS = 900.0
COMPOSE_TIMEOUT_SECS = 180.0  # up, restart, stop, down: each waits for its containers
HTTP_TIMEOUT_SECS = 10.0
KEY_FILE = "/run/tinytown/api-key"  # compose.yaml's TINYTOWN_TOWNHALL_API_KEY_PATH


def compose_command() -> list[str] | None:
    """``docker compose`` if the plugin answers, else ``docker-compose`` (v1), else None."""
    for command in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(command[0]) is None:
            continue
        try:
            answer = subprocess.run(
                [*command, "version"], capture_output=True, text=True, timeout=60
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if answer.returncode == 0:
            return command
    return None


def override_yaml() -> str:
    """The test's only changes to compose.yaml (merged by the compose tool, as ``-f`` files are)."""
    build = {"args": {"TINYTOWN_STAGE": STAGE}, "labels": {TEST_LABEL: "1"}}
    services: dict[str, Any] = {name: {"build": build} for name in BUILT_SERVICES}
    return json.dumps({"services": services}, indent=2)  # JSON is YAML


class ComposeStack:
    """One stack from compose.yaml under a unique project name; ``remove`` takes it all away."""

    def __init__(self, command: list[str], workdir: Path, engine: docker.DockerClient):
        suffix = uuid.uuid4().hex[:8]
        self.command, self.engine = command, engine
        self.project = f"tte2e{suffix}"  # compose v1 strips dashes from project names
        self.stack = f"tt-e2e-{suffix}"  # the town, the network, <stack>-workspace
        self.tag = f"e2e-{suffix}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        workdir.mkdir(parents=True, exist_ok=True)
        self.override = workdir / "compose.override.yaml"
        self.override.write_text(override_yaml())
        self.env_file = workdir / "empty.env"  # not the checkout's .env, if it has one
        self.env_file.write_text("")
        self.key: str | None = None
        self.submitted: tuple[list[str], list[str]] = ([], [])  # task and mission ids, by tests
        self.session = requests.Session()

    # --- the compose tool ----------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("TINYTOWN_", "COMPOSE_", "DOCKER_GID"))
            and k not in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "AGENT_CLI_NPM", "REDIS_URL")
        }
        env.update(
            DOCKER_GID=str(DOCKER_SOCKET.stat().st_gid),
            TINYTOWN_BASE_IMAGE=BASE_IMAGE,
            TINYTOWN_REDIS_IMAGE=REDIS_IMAGE,
            TINYTOWN_TAG=self.tag,
            TINYTOWN_STACK=self.stack,
            TINYTOWN_PUBLISH=f"127.0.0.1:{self.port}",
            TINYTOWN_MAX_WORKERS="2",
            AGENT_CLI_NPM="",  # the empty default: CI has no npm registry
        )
        return env

    def compose(
        self, *args: str, timeout: float = COMPOSE_TIMEOUT_SECS, input: str | None = None
    ) -> str:
        """Run the compose tool on compose.yaml (and the override); its stdout, or AssertionError
        with its output."""
        argv = [
            *self.command,
            "--project-name",
            self.project,
            "--env-file",
            str(self.env_file),
            "-f",
            str(COMPOSE_FILE),
            "-f",
            str(self.override),
            *args,
        ]
        try:
            done = subprocess.run(
                argv,
                cwd=REPO_ROOT,
                env=self.env(),
                input=input,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as err:
            raise AssertionError(
                f"`{' '.join(argv)}` did not finish within {timeout:g} s:\n{err.stdout}{err.stderr}"
            ) from None
        if done.returncode != 0:
            raise AssertionError(
                f"`{' '.join(argv)}` exited {done.returncode}:\n{done.stdout}{done.stderr}"
            )
        return done.stdout

    def build(self) -> None:
        ensure_wheelhouse()
        self.compose("--profile", "worker", "build", timeout=BUILD_TIMEOUT_SECS)
        remove_stale_stages(self.engine, STAGE)

    def up(self) -> None:
        self.compose("up", "-d")
        wait_for(self.live, timeout=60, what="townhall to answer /livez", stack=self)

    # --- what a user reads -----------------------------------------------------------------------

    def read_key(self) -> str:
        """The bootstrap key, as the README reads it: ``docker compose exec townhall cat …``."""
        self.key = self.compose("exec", "-T", "townhall", "cat", KEY_FILE).strip()
        return self.key

    def api(self, method: str, path: str, body: Any = None, key: str | None = None):
        key = self.key if key is None else key
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return self.session.request(
            method, self.url + path, json=body, headers=headers, timeout=HTTP_TIMEOUT_SECS
        )

    def live(self) -> bool:
        try:
            return self.session.get(self.url + "/livez", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def ready(self) -> bool:
        """Townhall answers and reaches Redis."""
        try:
            return self.session.get(self.url + "/readyz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def service(self, name: str):
        """The compose service's container (the Docker SDK's view)."""
        (container,) = self.engine.containers.list(
            all=True,
            filters={
                "label": [
                    f"com.docker.compose.project={self.project}",
                    f"com.docker.compose.service={name}",
                ]
            },
        )
        return container

    def workers(self, running_only: bool = False) -> list:
        """The worker containers the scaler started for this stack's town."""
        return self.engine.containers.list(
            all=not running_only,
            filters={"label": ["tinytown.role=agent-worker", f"tinytown.town={self.stack}"]},
        )

    def logs(self, tail: int = 40) -> str:
        """The last lines of townhall's and the scaler's logs, and each worker's, for a failure."""
        parts = []
        for name in ("townhall", "scaler"):
            try:
                text = self.service(name).logs(tail=tail).decode(errors="replace")
            except (docker.errors.DockerException, ValueError) as err:
                text = f"(unreadable: {err})"
            parts.append(f"--- {name} ---\n{text}")
        for worker in self.workers():
            parts.append(
                f"--- {worker.name} ({worker.status}) ---\n"
                + worker.logs(tail=tail).decode(errors="replace")
            )
        return "\n".join(parts)

    # --- clean up --------------------------------------------------------------------------------

    def remove(self) -> None:
        """Workers first (they hold the network and the workspace volume), then the compose
        project with its volumes, then anything left with its labels, then its images."""
        town = {"label": f"tinytown.town={self.stack}"}
        project = {"label": f"com.docker.compose.project={self.project}"}
        for container in self.engine.containers.list(all=True, filters=town):
            container.remove(force=True)
        try:
            self.compose("down", "--volumes", "--remove-orphans", "--timeout", "10")
        except AssertionError:
            pass  # what it could not remove is removed below, by label
        for container in self.engine.containers.list(all=True, filters=project):
            container.remove(force=True)
        for volume in self.engine.volumes.list(filters=project) + self.engine.volumes.list(
            filters=town
        ):
            try:
                volume.remove(force=True)
            except docker.errors.NotFound:
                pass
        for network in self.engine.networks.list(filters=project):
            network.remove()
        for name in IMAGES:
            try:
                self.engine.images.remove(f"tinytown-{name}:{self.tag}", force=True)
            except docker.errors.ImageNotFound:
                pass
        remove_stale_stages(self.engine, STAGE)
        self.session.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, *, timeout: float, what: str, stack: ComposeStack, interval: float = 0.5):
    """``check()`` until truthy; AssertionError naming ``what`` and the stack's logs after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout:g} s waiting for {what}\n{stack.logs()}"
            )
        time.sleep(interval)
