"""The scaler's one door to the town: HTTP to townhall, never Redis.

``GET /api/scaling`` (public; a long-poll with ``wait`` and ``since``), ``GET /v1/agents`` (scope
``town.read``) and
``POST /v1/agents/{id}/unhealthy`` (scope ``agent.manage``), with the configured API key, CA
bundle and timeout. Each whole call ends within the timeout (plus a long-poll's wait), reads at
most a bounded answer and follows no redirect (:mod:`tinytown.scaler.http_answer`). Any failure,
a status other than the expected one, a body that is not JSON or not as the contract says
(:mod:`tinytown.scaler.wire`) raises TownhallError saying which.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import quote

from tinytown.core.urls import redact_url
from tinytown.scaler import defaults
from tinytown.scaler.errors import Malformed, TownhallError
from tinytown.scaler.http_answer import Answer, AnswerError, call, watched_session
from tinytown.scaler.model import Config
from tinytown.scaler.wire import Agent, Signal, parse_agents, parse_signal

_HINTS = {
    "unreachable": "; is townhall running and is --url right?",
    "tls": "; does --townhall-ca-file hold the CA that signed townhall's certificate?",
}


class Townhall:
    """A session to one townhall: ``scaling_signal()``, ``agents()``, ``report_unhealthy()``."""

    def __init__(self, config: Config):
        self.base = config.url.rstrip("/")
        self.shown = redact_url(self.base)  # in messages: any password in the URL as ****
        self.timeout = config.http_timeout_secs
        self.session = watched_session()
        self.session.headers["Accept"] = "application/json"
        if config.api_key:
            self.session.headers["Authorization"] = f"Bearer {config.api_key}"
        if config.townhall_ca_file:
            self.session.verify = os.path.expanduser(config.townhall_ca_file)

    def _call(self, method: str, url: str, max_bytes: int, wait_secs: float = 0, **kw) -> Answer:
        try:
            return call(
                self.session,
                method,
                url,
                deadline_secs=self.timeout + wait_secs,
                max_bytes=max_bytes,
                timeout=self.timeout + wait_secs,
                **kw,
            )
        except AnswerError as err:
            shown = redact_url(url)
            raise TownhallError(f"{method} {shown} {err}{_HINTS.get(err.kind, '')}") from None

    def _get(self, path: str, max_bytes: int, wait_secs: float = 0) -> Any:
        answer = self._call("GET", self.base + path, max_bytes, wait_secs)
        url = self.shown + path
        if answer.status != 200:
            hint = (
                " (check the API key and its town.read scope)"
                if answer.status in (401, 403)
                else ""
            )
            raise TownhallError(f"GET {url} answered {answer.status}{hint}: {answer.text[:200]!r}")
        try:
            return answer.json()
        except ValueError:
            raise TownhallError(
                f"GET {url} answered 200 with a body that is not JSON: {answer.text[:200]!r}"
            ) from None

    def scaling_signal(self, wait_secs: int = 0, since: str | None = None) -> Signal:
        """The signal; with ``wait_secs`` and ``since`` (a version seen before), townhall
        answers when the version differs, or after ``wait_secs`` with the same signal."""
        path = "/api/scaling"
        if wait_secs and since:
            path += f"?wait={wait_secs}&since={quote(since, safe='')}"
        body = self._get(path, defaults.SIGNAL_MAX_BYTES, wait_secs)
        try:
            return parse_signal(body)
        except Malformed as err:
            raise TownhallError(f"GET {self.shown}/api/scaling is malformed: {err}") from None

    def agents(self) -> dict[str, Agent]:
        body = self._get("/v1/agents", defaults.AGENTS_MAX_BYTES)
        try:
            return parse_agents(body)
        except Malformed as err:
            raise TownhallError(f"GET {self.shown}/v1/agents is malformed: {err}") from None

    def report_unhealthy(
        self, agent_id: str, reason: str, outpost: str | None, container_id: str | None
    ) -> str:
        """Tell townhall a worker is unhealthy (it appends ``agent_unhealthy``, which its
        ``[[notify]]`` targets hear about); returns the event's id."""
        path = f"/v1/agents/{quote(agent_id, safe='')}/unhealthy"
        url = self.base + path
        body = {"reason": reason, "outpost": outpost, "container_id": container_id}
        answer = self._call(
            "POST", url, defaults.REPORT_MAX_BYTES, json={k: v for k, v in body.items() if v}
        )
        url = self.shown + path
        if answer.status != 202:
            hint = (
                " (check the API key and its agent.manage scope)"
                if answer.status in (401, 403)
                else ""
            )
            raise TownhallError(f"POST {url} answered {answer.status}{hint}: {answer.text[:200]!r}")
        try:
            return str(answer.json()["event_id"])
        except (ValueError, KeyError, TypeError):
            raise TownhallError(
                f"POST {url} answered 202 without an event_id: {answer.text[:200]!r}"
            ) from None
