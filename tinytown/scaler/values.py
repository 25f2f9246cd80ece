"""A configuration value on its way in: turned into its setting's type (:func:`coerce`), or
refused with a ConfigError that names the key, the value, where it came from and the expected
form."""

from __future__ import annotations

import math
from typing import Any

from tinytown.scaler.errors import ConfigError
from tinytown.scaler.settings import Setting

# The largest number any setting takes unless it names its own: seconds past this (11 days) or
# counts past it are mistakes, and far larger ones overflow the timeouts they become.
NUMBER_MAX = 1_000_000

EXPECTED = {
    "str": "a non-empty string",
    "int": "a whole number",
    "float": "a number",
    "bool": "true or false",
    "list": "a list of strings",
    "map": 'a table of NAME = "value" strings',
}


BOOL_WORDS = {
    "true": True,
    "1": True,
    "yes": True,
    "on": True,
    "false": False,
    "0": False,
    "no": False,
    "off": False,
}


def invalid(key: str, value: Any, source: str, expected: str) -> ConfigError:
    return ConfigError(f"invalid {key}={value!r} (from {source}): expected {expected}")


def coerce(setting: Setting, value: Any, source: str) -> Any:
    """Turn a raw value (a string from a flag or env, or a TOML value) into the setting's type."""
    key, kind = setting.key, setting.kind
    expected = EXPECTED[kind]
    highest = NUMBER_MAX if setting.maximum is None else setting.maximum
    if kind in ("int", "float"):
        low = f"{setting.minimum:g}" if setting.minimum is not None else None
        expected += f" from {low} to {highest:g}" if low else f" up to {highest:g}"
    if kind == "str":
        if not isinstance(value, str) or not value.strip():
            raise invalid(key, value, source, expected)
        return value.strip()
    if kind in ("int", "float"):
        number: float
        if isinstance(value, str):
            try:
                number = int(value) if kind == "int" else float(value)
            except ValueError:
                raise invalid(key, value, source, expected) from None
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise invalid(key, value, source, expected)
        elif kind == "int" and not isinstance(value, int):
            raise invalid(key, value, source, expected)
        else:
            number = value
        if (
            not math.isfinite(number)
            or (setting.minimum is not None and number < setting.minimum)
            or number > highest
        ):
            raise invalid(key, value, source, expected)
        return int(number) if kind == "int" else float(number)
    if kind == "bool":
        if isinstance(value, str) and value.strip().lower() in BOOL_WORDS:
            return BOOL_WORDS[value.strip().lower()]
        if not isinstance(value, bool):
            raise invalid(key, value, source, expected)
        return value
    if kind == "list":
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise invalid(key, value, source, expected)
        return [v.strip() for v in value]
    # map: a TOML table, or a list of KEY=VALUE strings from --env
    if isinstance(value, list):
        pairs = {}
        for item in value:
            name, sep, val = item.partition("=")
            if not sep:
                raise invalid(key, item, source, "KEY=VALUE")
            pairs[name.strip()] = val
        value = pairs
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise invalid(key, value, source, expected)
    return dict(value)
