"""The scaler's one door to the town: HTTP to townhall, never Redis.

``GET /api/scaling`` (public; a long-poll with ``wait`` and ``since``), ``GET /v1/agents`` (scope
``town.read``) and
``POST /v1/agents/{id}/unhealthy`` (scope ``agent.manage``), with the configured API key, CA
bundle and timeout. Any failure, a status other than the expected one, a body that is not JSON or
not as the contract says (:mod:`tinytown.scaler.wire`) raises TownhallError saying which.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import quote

import requests

from tinytown.scaler.errors import Malformed, TownhallError, short_reason
from tinytown.scaler.model import Config
from tinytown.scaler.wire import Agent, Signal, parse_agents, parse_signal


class Townhall:
    """A session to one townhall: ``scaling_signal()``, ``agents()``, ``report_unhealthy()``."""

    def __init__(self, config: Config):
        self.base = config.url.rstrip("/")
        self.timeout = config.http_timeout_secs
        self.session = requests.Session()
        self.session.headers["Accept"] = "application/json"
        if config.api_key:
            self.session.headers["Authorization"] = f"Bearer {config.api_key}"
        if config.townhall_ca_file:
            self.session.verify = os.path.expanduser(config.townhall_ca_file)

    def _get(self, path: str, wait_secs: float = 0) -> Any:
        url = self.base + path
        try:
            response = self.session.get(url, timeout=self.timeout + wait_secs)
        except requests.RequestException as err:
            raise TownhallError(
                f"GET {url} failed ({short_reason(err)}); is townhall running and is --url right?"
            ) from None
        if response.status_code != 200:
            hint = (
                " (check the API key and its town.read scope)"
                if response.status_code in (401, 403)
                else ""
            )
            raise TownhallError(
                f"GET {url} answered {response.status_code}{hint}: {response.text[:200]!r}"
            )
        try:
            return response.json()
        except ValueError:
            raise TownhallError(
                f"GET {url} answered 200 with a body that is not JSON: {response.text[:200]!r}"
            ) from None

    def scaling_signal(self, wait_secs: int = 0, since: str | None = None) -> Signal:
        """The signal; with ``wait_secs`` and ``since`` (a version seen before), townhall
        answers when the version differs, or after ``wait_secs`` with the same signal."""
        path = "/api/scaling"
        if wait_secs and since:
            path += f"?wait={wait_secs}&since={quote(since, safe='')}"
        body = self._get(path, wait_secs)
        try:
            return parse_signal(body)
        except Malformed as err:
            raise TownhallError(f"GET {self.base}/api/scaling is malformed: {err}") from None

    def agents(self) -> dict[str, Agent]:
        body = self._get("/v1/agents")
        try:
            return parse_agents(body)
        except Malformed as err:
            raise TownhallError(f"GET {self.base}/v1/agents is malformed: {err}") from None

    def report_unhealthy(
        self, agent_id: str, reason: str, outpost: str | None, container_id: str | None
    ) -> str:
        """Tell townhall a worker is unhealthy (it appends ``agent_unhealthy``, which its
        ``[[notify]]`` targets hear about); returns the event's id."""
        url = f"{self.base}/v1/agents/{quote(agent_id, safe='')}/unhealthy"
        body = {"reason": reason, "outpost": outpost, "container_id": container_id}
        try:
            response = self.session.post(
                url, json={k: v for k, v in body.items() if v}, timeout=self.timeout
            )
        except requests.RequestException as err:
            raise TownhallError(f"POST {url} failed ({short_reason(err)})") from None
        if response.status_code != 202:
            hint = (
                " (check the API key and its agent.manage scope)"
                if response.status_code in (401, 403)
                else ""
            )
            raise TownhallError(
                f"POST {url} answered {response.status_code}{hint}: {response.text[:200]!r}"
            )
        try:
            return str(response.json()["event_id"])
        except (ValueError, KeyError, TypeError):
            raise TownhallError(
                f"POST {url} answered 202 without an event_id: {response.text[:200]!r}"
            ) from None
