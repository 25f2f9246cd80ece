"""Decision 4: no KEYS or SCAN outside tests — checked over the source, so it cannot regress."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [*ROOT.glob("*.py"), *(ROOT / "tinytown").rglob("*.py")]
PATTERNS = [
    re.compile(r"\b(?:redis|r|client|pipe|conn|self\.r|town\.redis)\.(?:keys|scan|scan_iter)\("),
    re.compile(r"""call\(\s*['"](?:KEYS|SCAN)['"]""", re.I),
    re.compile(r"""execute_command\(\s*['"](?:KEYS|SCAN)\b""", re.I),
]


def test_sources_are_found():
    assert any(p.name == "keys.py" for p in SOURCES)


def test_no_keyspace_scan_outside_tests():
    offenders = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in SOURCES
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if any(p.search(line) for p in PATTERNS)
    ]
    assert offenders == []


def test_only_keys_module_spells_the_prefix():
    offenders = [
        str(path.relative_to(ROOT))
        for path in SOURCES
        if path.name != "keys.py" and re.search(r"""['"]tt:\S""", path.read_text())
    ]
    assert offenders == []
