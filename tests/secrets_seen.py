"""Every secret the test suite makes, and the scan that finds one in log text.

Test helpers that make a secret pass it through :func:`remember` (``add_key`` in
``townhall_support``, the ``keyring`` in ``api_support``, the A2A keys, the scaler stack's Redis
password, …); product code is never wrapped or patched. :func:`leaks` then looks for two things
in a text:

- any remembered secret, verbatim (at least ``MIN_SECRET_CHARS`` long: a short test password
  such as ``"s"`` would match innocent text);
- the shapes a credential takes in the product whatever test made it (:data:`PATTERNS`): a task
  token (``tttask.<task id>.<secret>``), an ``Authorization: Bearer`` or ``X-API-Key`` value, a
  64-hex API key named as one, a ``password=`` value, a password in a URL (``://user:pw@``).
  Placeholders (``<key>``, ``$TINYTOWN_TASK_TOKEN``, ``****``, ``…``) are not values.

The one place a raw key is meant to be seen: the line after the header ``tt auth add-key`` /
``gen-key`` print before the new key (shown once, by design). With ``shown_once_allowed`` that
line is not a leak; the plugin (``tests/log_scan.py``) allows it in captured stdout only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

MIN_SECRET_CHARS = 12
EXCERPT_CHARS = 160
SHOWN_ONCE_HEADERS = (
    "API key (shown only once; store it now, it is kept nowhere):",  # tt auth add-key
    "API Key (store securely, shown only once):",  # tt auth gen-key
)

_remembered: set[str] = set()

_VALUE = r"(?P<value>[^\s\"'<>,;&)}\]]+)"
PATTERNS: dict[str, re.Pattern[str]] = {
    "a task token": re.compile(
        r"tttask\.[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\."
        r"(?P<value>[A-Za-z0-9_-]{16,})"
    ),
    "an Authorization: Bearer value": re.compile(
        r"(?i)authorization[\"']?\s*[:=]\s*[\"']?bearer\s+" + _VALUE
    ),
    "an X-API-Key value": re.compile(r"(?i)x-api-key[\"']?\s*[:=]\s*[\"']?" + _VALUE),
    "a 64-hex API key": re.compile(r"(?i)api[_-]?key\W{0,6}(?P<value>[0-9a-f]{64})(?![0-9a-f])"),
    "a password= value": re.compile(
        r"(?i)\bpass(?:word|wd)(?:=|\"\s*:\s*\"|'\s*:\s*'|\s*=\s*\")" + _VALUE
    ),
    "a password in a URL": re.compile(r"(?i)\b[a-z][a-z0-9+.-]*://[^\s/@:]*:(?P<value>[^\s@/]+)@"),
}
# Not values: redactions, placeholders, variables, and code (a traceback shows source lines).
_NOT_A_VALUE = re.compile(
    r"^(?:[*•…x]+|<.*|\$.*|\{.*|%.*|none|null|true|false|redacted|[a-z_]+(?:\.[a-z_]+)+)$", re.I
)


def remember(secret: str) -> str:
    """Note a secret a test made (returned as is, to use inline); short ones are ignored."""
    if len(secret) >= MIN_SECRET_CHARS:
        _remembered.add(secret)
    return secret


def remembered() -> frozenset[str]:
    return frozenset(_remembered)


@dataclass(frozen=True)
class Leak:
    what: str  # "a remembered secret", or a pattern's name
    line: int  # 1-based, in the text scanned
    excerpt: str  # the line around it, the secret redacted


def redacted(line: str, spans: list[tuple[int, int]], around: int) -> str:
    """``line`` with every span shown as its first 4 characters and its length only, cut to
    ``EXCERPT_CHARS`` around the position ``around``."""
    merged: list[list[int]] = []
    for start, end in sorted(spans):
        if merged and start < merged[-1][1]:  # overlapping secrets are hidden as one
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    out, last, centre = [], 0, 0
    for start, end in merged:
        out.append(line[last:start])
        if start <= around < end:
            centre = sum(len(part) for part in out)
        out.append(f"{line[start : start + 4]}…[redacted, {end - start} chars]")
        last = end
    text = "".join(out) + line[last:]
    begin = max(0, centre - EXCERPT_CHARS // 2)
    return text[begin : begin + EXCERPT_CHARS].strip()


def _shown_once(lines: list[str], index: int) -> bool:
    return index > 0 and lines[index - 1].strip() in SHOWN_ONCE_HEADERS


def leaks(
    text: str, secrets: Iterable[str] | None = None, *, shown_once_allowed: bool = False
) -> list[Leak]:
    """Every secret in ``text``: the remembered ones (or ``secrets``), and :data:`PATTERNS`."""
    secrets = [s for s in (remembered() if secrets is None else secrets) if s]
    found = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if shown_once_allowed and _shown_once(lines, i):
            continue
        spans: list[tuple[str, int, int]] = []
        for secret in secrets:
            at = line.find(secret)
            if at >= 0:
                spans.append(("a remembered secret", at, at + len(secret)))
        for what, pattern in PATTERNS.items():
            for match in pattern.finditer(line):
                if not _NOT_A_VALUE.match(match["value"]):
                    spans.append((what, match.start("value"), match.end("value")))
        # one finding per secret: a remembered key that is also a Bearer value counts once
        kept: list[tuple[str, int, int]] = []
        for what, start, end in sorted(spans, key=lambda s: (s[1], -(s[2] - s[1]))):
            if not any(s <= start and end <= e for _, s, e in kept):
                kept.append((what, start, end))
        hidden = [(start, end) for _, start, end in kept]
        found += [Leak(what, i + 1, redacted(line, hidden, start)) for what, start, _ in kept]
    return found
