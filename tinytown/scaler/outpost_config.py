"""``[[outposts]]``: the Docker engines the scaler starts workers on, as the TOML file lists
them (none: the local engine alone), each checked on the way in."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
from typing import Any

from tinytown.scaler.errors import ConfigError
from tinytown.scaler.model import Outpost
from tinytown.scaler.settings import Setting
from tinytown.scaler.values import coerce, invalid
from tinytown.scaler.wire import NAME_RE

OUTPOST_KEYS = {f.name for f in dataclasses.fields(Outpost)}


def parse_outposts(raw: list[Any], source: str, max_workers: int) -> tuple[Outpost, ...]:
    if not raw:
        return (Outpost(max_workers=max_workers),)
    outposts: list[Outpost] = []
    for index, table in enumerate(raw):
        where = f"outposts[{index}]"
        if not isinstance(table, dict):
            raise invalid(where, table, source, "a table")
        unknown = set(table) - OUTPOST_KEYS
        if unknown:
            raise ConfigError(
                f"unknown key {sorted(unknown)[0]!r} in {where} of {source}; known "
                f"keys: {', '.join(sorted(OUTPOST_KEYS))}"
            )
        name = table.get("name")
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise invalid(f"{where}.name", name, source, "letters, digits, '.', '_' or '-'")
        if any(o.name == name for o in outposts):
            raise invalid(f"{where}.name", name, source, "a name not used by another outpost")
        host = table.get("docker_host")
        if host is not None and (
            not isinstance(host, str) or not re.match(r"^(unix|tcp|ssh)://.", host)
        ):
            raise invalid(
                f"{where}.docker_host",
                host,
                source,
                "unix:///path, tcp://host:port or ssh://user@host",
            )
        mw = coerce(
            Setting("max_workers", "int", "", "", minimum=0),
            table.get("max_workers", max_workers),
            f"{source} {where}",
        )
        cost = coerce(
            Setting("cost_per_hour", "float", "", "", minimum=0),
            table.get("cost_per_hour", 0.0),
            f"{source} {where}",
        )
        tls = {}
        for key in ("tls_ca", "tls_cert", "tls_key"):
            value = table.get(key)
            if value is None:
                continue
            if not isinstance(value, str) or not os.path.isfile(os.path.expanduser(value)):
                raise invalid(f"{where}.{key}", value, source, "the path of an existing file")
            if not (host or "").startswith("tcp://"):
                raise invalid(f"{where}.{key}", value, source, "TLS files only with tcp://")
            tls[key] = os.path.expanduser(value)
        if ("tls_cert" in tls) != ("tls_key" in tls):
            raise invalid(
                f"{where}.tls_cert", table.get("tls_cert"), source, "tls_cert and tls_key together"
            )
        if host and host.startswith("ssh://") and importlib.util.find_spec("paramiko") is None:
            raise invalid(
                f"{where}.docker_host",
                host,
                source,
                "an installed paramiko for "
                "ssh:// (the Docker SDK needs it): pip install 'docker[ssh]'",
            )
        verify = table.get("tls_verify", True)
        if not isinstance(verify, bool):
            raise invalid(f"{where}.tls_verify", verify, source, "true or false")
        outposts.append(Outpost(name, host, mw, cost, tls_verify=verify, **tls))
    return tuple(outposts)
