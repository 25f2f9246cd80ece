"""A ``tinytown.toml`` that holds secrets and that others may read: found at start, with the fix.

Townhall's gunicorn master, the worker and ``tt status`` each write one warning line naming the
file, its mode, the keys that hold secrets (names only, never values) and ``chmod 600 <file>``.
Nothing refuses to start: the file may be meant for a group (a container's volume, say); the
line makes that a choice.

What counts as a secret — a value that grants access on its own:

- ``[redis] password``, and ``[redis] url`` when it carries one (``redis://user:PASSWORD@…``);
- ``[[notify]] url`` (an ntfy topic, a Slack incoming webhook or a webhook's key in its URL is
  the capability itself; a bare origin such as ``http://127.0.0.1:9000/`` carries none) and
  ``[[notify]] secret`` (the HMAC key);
- ``[agent_clis.NAME] env`` entries named like a credential (``…KEY``, ``…TOKEN``,
  ``…SECRET``, ``…PASSWORD``): ``ANTHROPIC_API_KEY``, ``GITHUB_TOKEN``.

Not secrets: API key hashes (Argon2id of 256 random bits: nothing to guess offline), the OIDC
issuer, audience and JWKS URL (public), ``secret_env`` (a variable's name), TLS file paths
(those files have modes of their own).
"""

from __future__ import annotations

import re
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tinytown.core.logfmt import value_text

GROUP_OTHER_BITS = 0o077
PRIVATE_MODE = "600"
_CREDENTIAL_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.I)


@dataclass(frozen=True)
class Exposure:
    """A config file with secrets whose mode gives its group or others access."""

    path: Path
    mode: int
    keys: tuple[str, ...]

    @property
    def fix(self) -> str:
        return f"chmod {PRIVATE_MODE} {self.path}"

    def fields(self) -> dict[str, str]:
        """The warning as log fields: ``file``, ``mode``, ``secrets``, ``fix``."""
        return {
            "file": str(self.path),
            "mode": f"{self.mode:04o}",
            "secrets": ",".join(self.keys),
            "fix": self.fix,
        }

    def log_fields(self) -> str:
        """``file=… mode=0644 secrets=redis.password fix="chmod 600 …"`` for a log line."""
        return " ".join(f"{k}={value_text(v)}" for k, v in self.fields().items())

    @property
    def message(self) -> str:
        return (
            f"{self.path} holds secrets ({', '.join(self.keys)}) and its mode {self.mode:04o} "
            f"gives its group or others access; run: {self.fix}"
        )


def _url_has_password(value: Any) -> bool:
    try:
        return isinstance(value, str) and bool(urlsplit(value).password)
    except ValueError:  # a bad port: load_config reports the URL itself
        return False


def _capability(url: Any) -> bool:
    """Whether a URL can carry a capability: a secret rides in its credentials, path, query or
    fragment. A bare origin (``http://127.0.0.1:9000/``, the README's local receiver) says only
    where; anything unreadable is counted."""
    if not url:
        return False
    try:
        parts = urlsplit(url) if isinstance(url, str) else None
    except ValueError:
        return True
    return (
        parts is None
        or bool(parts.username or parts.password or parts.query or parts.fragment)
        or parts.path not in ("", "/")
    )


def _table(data: Mapping, key: str) -> Mapping:
    value = data.get(key)
    return value if isinstance(value, Mapping) else {}


def secret_keys(data: Mapping[str, Any]) -> list[str]:
    """The keys of a parsed ``tinytown.toml`` that hold a secret (see the module docstring)."""
    found = []
    redis = _table(data, "redis")
    if redis.get("password"):
        found.append("redis.password")
    if _url_has_password(redis.get("url")):
        found.append("redis.url")
    targets = data.get("notify")
    for i, target in enumerate(targets if isinstance(targets, list) else []):
        if not isinstance(target, Mapping):
            continue
        if _capability(target.get("url")):
            found.append(f"notify[{i}].url")
        if target.get("secret"):
            found.append(f"notify[{i}].secret")
    for name, cli in _table(data, "agent_clis").items():
        env = _table(cli, "env") if isinstance(cli, Mapping) else {}
        found += [
            f"agent_clis.{name}.env.{var}"
            for var, value in env.items()
            if value and _CREDENTIAL_NAME.search(var)
        ]
    return found


def exposure(path: Path | None) -> Exposure | None:
    """The file's exposure, or None: no file, a private mode, no secret, or not readable as
    TOML (the config loader reports that)."""
    if path is None:
        return None
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        if not mode & GROUP_OTHER_BITS:
            return None
        keys = secret_keys(tomllib.loads(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    return Exposure(path, mode, tuple(keys)) if keys else None
