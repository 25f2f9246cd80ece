"""Outposts: the Docker engines where workers run (the local one, or remote ones over ``tcp://``
with TLS or ``ssh://``), through the Docker SDK.

``DockerOutpost`` lists this town's worker containers by label, starts one (with a fresh agent
id, the town's shared workspace volume and the Docker healthcheck that makes the container a
witness of its own health), drains (SIGTERM), restarts and removes them. Images are never
pulled. Every call raises OutpostError with a readable reason.
"""

from __future__ import annotations

import contextlib
import math
import shlex
import uuid
from collections.abc import Mapping
from typing import Any

import docker
import docker.errors
import docker.tls
import docker.types
import requests

from tinytown.scaler.containers import (
    EXITED_STATUSES,
    LABEL_AGENT_ID,
    LABEL_COST_PER_HOUR,
    LABEL_OUTPOST,
    LABEL_ROLE,
    LABEL_STARTED_AT,
    LABEL_TOWN,
    ROLE,
    ROLE_WORKSPACE,
    ROLE_WORKSPACE_INIT,
    Worker,
    container_health,
    worker_from_attrs,
)
from tinytown.scaler.defaults import (
    HEALTH_FILE,
    HEALTH_FILE_ENV,
    HEALTHCHECK_RETRIES,
    HEALTHCHECK_TIMEOUT_SECS,
    IMAGE_HEALTHCHECK,
    NO_WORKSPACE_VOLUME,
    WORKSPACE_INIT_MOUNT,
)
from tinytown.scaler.epoch import iso
from tinytown.scaler.errors import OutpostError, short_reason
from tinytown.scaler.log import log
from tinytown.scaler.model import Config, Outpost


def workspace_volume_name(config: Config, town: str) -> str | None:
    """The town's shared workspace volume, or None when workers get none."""
    if config.workspace_volume == NO_WORKSPACE_VOLUME:
        return None
    return config.workspace_volume.format(town=town)


def worker_healthcheck(config: Config) -> dict[str, Any]:
    """The Docker healthcheck every worker container gets: ``config.healthcheck`` (by default
    ``python -P -m tinytown.worker.health_file``, which judges the worker's health file by the
    worker's own heartbeat interval) run once per heartbeat interval; unhealthy after
    HEALTHCHECK_RETRIES failures in a row, not counted within the start grace."""
    ns = 1_000_000_000
    return {
        "test": ["CMD", *shlex.split(config.healthcheck)],
        "interval": int(config.heartbeat_interval_secs * ns),
        "timeout": int(HEALTHCHECK_TIMEOUT_SECS * ns),
        "retries": HEALTHCHECK_RETRIES,
        "start_period": int(config.start_grace_secs * ns),
    }


class DockerOutpost:
    """One outpost's Docker engine. Every call raises OutpostError with a readable reason."""

    def __init__(self, outpost: Outpost, timeout_secs: float):
        self.outpost = outpost
        self.timeout = int(math.ceil(timeout_secs))
        self._client: docker.DockerClient | None = None

    @property
    def name(self) -> str:
        return self.outpost.name

    def client(self) -> docker.DockerClient:
        if self._client is None:
            o = self.outpost
            try:
                if o.docker_host is None:
                    self._client = docker.from_env(timeout=self.timeout)
                else:
                    tls = None
                    if o.tls_ca or o.tls_cert:
                        cert = (o.tls_cert, o.tls_key) if o.tls_cert else None
                        tls = docker.tls.TLSConfig(
                            client_cert=cert, ca_cert=o.tls_ca, verify=o.tls_verify
                        )
                    # use_ssh_client: the system ssh binary, so paramiko is not needed.
                    self._client = docker.DockerClient(
                        base_url=o.docker_host,
                        tls=tls or False,
                        timeout=self.timeout,
                        use_ssh_client=o.docker_host.startswith("ssh://"),
                    )
            except Exception as err:  # the SDK raises DockerException, OSError, ValueError…
                raise OutpostError(
                    f"cannot reach Docker at {o.docker_host or 'the local engine'}"
                    f": {short_reason(err)}"
                ) from None
        return self._client

    def _call(self, what: str, fn, *args, missing_ok: bool = False, **kwargs):
        """``fn(*args, **kwargs)``; with ``missing_ok``, None when Docker answers 404."""
        try:
            return fn(*args, **kwargs)
        except OutpostError:
            raise
        except Exception as err:
            if not isinstance(err, docker.errors.NotFound):
                self._client = None  # reconnect next time
            elif missing_ok:
                return None
            raise OutpostError(f"{what} on outpost {self.name}: {short_reason(err)}") from None

    def list_workers(self, town: str | None, full: bool = False) -> list[Worker]:
        labels = [f"{LABEL_ROLE}={ROLE}", f"{LABEL_OUTPOST}={self.name}"]
        if town:
            labels.append(f"{LABEL_TOWN}={town}")
        containers = self._call(
            "list containers",
            lambda: self.client().containers.list(
                all=True, filters={"label": labels}, sparse=not full, ignore_removed=True
            ),
        )
        workers = []
        for c in containers:
            if not full and c.attrs.get("State") in EXITED_STATUSES:
                # Only an inspect tells its exit code and how long it ran (crash loops).
                self._call("inspect container", c.reload, missing_ok=True)
                if not isinstance(c.attrs.get("State"), dict):
                    continue  # removed meanwhile
            workers.append(worker_from_attrs(c.attrs, self.outpost))
        return workers

    def start_worker(
        self, config: Config, town: str, now: float, environ: Mapping[str, str]
    ) -> tuple[str, str, str]:
        """Create and start one worker; returns (container id, container name, agent id)."""
        agent_id = str(uuid.uuid4())
        short = agent_id[:8]
        name = f"tt-{town}-{self.name}-{short}"
        env = {k: environ[k] for k in config.pass_env if k in environ}
        env.update(config.env)
        env.setdefault("TINYTOWN_TOWN_NAME", town)
        env.setdefault(HEALTH_FILE_ENV, HEALTH_FILE)
        env.update(
            TINYTOWN_AGENT_ID=agent_id,
            TINYTOWN_AGENT_NAME=f"{self.name}-{short}",
            TINYTOWN_OUTPOST=self.name,
            TINYTOWN_COST_PER_HOUR=f"{self.outpost.cost_per_hour:g}",
        )
        labels = {
            LABEL_TOWN: town,
            LABEL_ROLE: ROLE,
            LABEL_OUTPOST: self.name,
            LABEL_AGENT_ID: agent_id,
            LABEL_STARTED_AT: iso(now),
            LABEL_COST_PER_HOUR: f"{self.outpost.cost_per_hour:g}",
        }
        mounts = []
        volume = workspace_volume_name(config, town)
        if volume:
            self.ensure_workspace_volume(volume, config.image, town)
            mounts.append(docker.types.Mount(target=config.workspace, source=volume, type="volume"))
        volumes = {}
        for spec in config.volumes:
            source, target, *mode = spec.split(":")
            volumes[source] = {"bind": target, "mode": mode[0] if mode else "rw"}
        kwargs: dict[str, Any] = dict(
            name=name,
            labels=labels,
            environment=env,
            detach=True,
            mounts=mounts,
            volumes=volumes,
            restart_policy={"Name": "no"},
            network=config.network,
        )
        if config.command:
            kwargs["command"] = shlex.split(config.command)
        if config.healthcheck != IMAGE_HEALTHCHECK:
            kwargs["healthcheck"] = worker_healthcheck(config)
        client = self.client()
        container = self._call("create container", client.containers.create, config.image, **kwargs)
        try:
            self._call("start container", container.start)
        except OutpostError:
            with contextlib.suppress(Exception):
                container.remove(force=True, v=True)
            raise
        return container.id, name, agent_id

    def ensure_workspace_volume(self, name: str, image: str, town: str) -> None:
        """Create the town's shared workspace volume on this engine if it is missing, owned by
        the image's user: a new volume's root belongs to root, and the worker runs as 10001.
        Checked before every start: Docker would silently create a deleted one owned by root."""
        client = self.client()
        if self._call("inspect volume", client.volumes.get, name, missing_ok=True) is None:
            image_config = self._call("inspect image", client.images.get, image).attrs.get("Config")
            user = (image_config or {}).get("User") or ""
            labels = {LABEL_TOWN: town, LABEL_ROLE: ROLE_WORKSPACE, LABEL_OUTPOST: self.name}
            volume = self._call("create volume", client.volumes.create, name=name, labels=labels)
            try:
                if user.split(":")[0] not in ("", "0", "root"):
                    self._hand_over(
                        volume.name, image, user, {**labels, LABEL_ROLE: ROLE_WORKSPACE_INIT}
                    )
            except BaseException:
                with contextlib.suppress(Exception):
                    volume.remove(force=True)  # so that the next start tries again
                raise
            log("info", "workspace_volume_created", outpost=self.name, volume=name, owner=user)

    def _hand_over(self, volume: str, image: str, user: str, labels: dict[str, str]) -> None:
        """``chown USER`` the volume's root in a one-off root container of the worker image."""
        container = self._call(
            "create workspace-init container",
            self.client().containers.create,
            image,
            entrypoint=["chown", user, WORKSPACE_INIT_MOUNT],
            user="0",
            labels=labels,
            network_mode="none",
            detach=True,
            mounts=[docker.types.Mount(target=WORKSPACE_INIT_MOUNT, source=volume, type="volume")],
        )
        try:
            self._call("start workspace-init container", container.start)
            code = self._call(
                "wait for workspace-init container", container.wait, timeout=self.timeout
            ).get("StatusCode")
            if code != 0:
                output = (
                    self._call("read workspace-init logs", container.logs)
                    .decode(errors="replace")
                    .strip()
                )
                raise OutpostError(
                    f"chown {user} of workspace volume {volume} on outpost "
                    f"{self.name} exited {code}: {output[-300:]}"
                )
        finally:
            with contextlib.suppress(Exception):
                container.remove(force=True)

    def log_tail(self, container_id: str, lines: int) -> str | None:
        """The last ``lines`` lines a container wrote (stdout and stderr), None if unreadable:
        best effort, for a notification."""
        try:
            container = self.client().containers.get(container_id)
            return container.logs(tail=lines).decode(errors="replace")
        except (docker.errors.DockerException, requests.RequestException) as err:
            log("warning", "logs_unreadable", container=container_id[:12], error=short_reason(err))
            return None

    def health(self, container_id: str) -> str | None:
        """The container's Docker health now (inspected): starting, healthy, unhealthy or None."""
        container = self._call("get container", self.client().containers.get, container_id)
        return container_health(container.attrs)

    def drain(self, container_id: str) -> None:
        container = self._call("get container", self.client().containers.get, container_id)
        self._call("SIGTERM container", container.kill, signal="SIGTERM")

    def restart(self, container_id: str, timeout_secs: float) -> None:
        container = self._call("get container", self.client().containers.get, container_id)
        self._call("restart container", container.restart, timeout=int(timeout_secs))

    def remove(self, container_id: str) -> Worker | None:
        """Remove an exited container (and any anonymous volume; never the named workspace
        volume); returns it as last inspected, for its cost."""
        container = self._call("get container", self.client().containers.get, container_id)
        worker = worker_from_attrs(container.attrs, self.outpost)
        self._call("remove container", container.remove, v=True)
        return worker
