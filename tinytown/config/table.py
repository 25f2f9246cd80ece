"""One TOML table being read: typed getters that name the key on error, and a check that no
unknown key is left (every section of ``tinytown.toml`` is read through one)."""

from __future__ import annotations

from typing import Any

from tinytown.core.errors import ConfigError

SCOPES = ("town.read", "town.write", "agent.manage", "admin")


class Table:
    """One TOML table being read: typed getters that name the key on error, unknown-key check."""

    def __init__(self, data: Any, section: str, source: str):
        self.section, self.source = section, source
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: [{section}] must be a table, got {data!r}")
        self.data, self.seen = data, set()

    def _key(self, key: str) -> str:
        return f"{self.section}.{key}" if self.section else key

    def _fail(self, key: str, value: Any, form: str) -> ConfigError:
        return ConfigError(
            f"{self.source}: {self._key(key)} = {value!r} is invalid; expected {form}"
        )

    def get(self, key: str, default: Any, kind: type, form: str | None = None) -> Any:
        self.seen.add(key)
        if key not in self.data:
            return default
        value = self.data[key]
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise self._fail(key, value, form or "an integer")
        if kind is bool and not isinstance(value, bool):
            raise self._fail(key, value, form or "true or false")
        if kind is str and not isinstance(value, str):
            raise self._fail(key, value, form or "a string")
        return value

    def opt_str(self, key: str) -> str | None:
        value = self.get(key, None, str)
        return value if value else None

    def int_range(self, key: str, default: int, low: int, high: int | None = None) -> int:
        form = f"an integer ≥ {low}" if high is None else f"an integer from {low} to {high}"
        value = self.get(key, default, int, form)
        if value < low or (high is not None and value > high):
            raise self._fail(key, value, form)
        return value

    def choice(self, key: str, default: str, choices: tuple[str, ...]) -> str:
        form = "one of " + ", ".join(f'"{c}"' for c in choices)
        value = self.get(key, default, str, form)
        if value not in choices:
            raise self._fail(key, value, form)
        return value

    def scopes(self, key: str) -> tuple[str, ...]:
        self.seen.add(key)
        value = self.data.get(key, [])
        form = "a list of scopes from " + ", ".join(f'"{s}"' for s in SCOPES)
        if not isinstance(value, list) or any(s not in SCOPES for s in value):
            raise self._fail(key, value, form)
        return tuple(value)

    def table(self, key: str) -> Table:
        self.seen.add(key)
        return Table(self.data.get(key, {}), self._key(key), self.source)

    def check_unknown(self) -> None:
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            known = ", ".join(sorted(self.seen))
            raise ConfigError(
                f"{self.source}: unknown key {self._key(unknown[0])!s}; "
                f"[{self.section or 'top level'}] accepts: {known}"
            )
