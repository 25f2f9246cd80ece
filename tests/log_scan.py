"""The log scan: no log line captured across the test suite holds a password, a raw key or a
token. A pytest plugin; ``tests/conftest.py`` imports its hooks and fixture.

What counts as a log line, and is scanned (:func:`tests.secrets_seen.leaks`):

- each test's captured Python logging records and captured stdout/stderr (``report.sections``:
  setup, call and teardown) — the product's loggers, and every process a test starts with its
  output left to pytest (fd-level capture);
- at session end, every ``*.out`` and ``*.log`` file under the session's temporary directory:
  townhall's output (``townhall-<port>.out``, ``gunicorn.log``), worker and scaler logs, task
  logs (``.tt/logs/tasks/<task>.log``), the town's Redis log.

Not scanned, on purpose: output a test captures itself (``subprocess.run(capture_output=True)``,
``capsys.readouterr()``) — that is a command's answer, asserted by the test, not a log; it is
how ``tt auth add-key`` shows a new key once, by design. The same line after its header is
allowed in captured stdout too (:data:`tests.secrets_seen.SHOWN_ONCE_HEADERS`). Nor are files a
test writes outside the session's temporary directory.

A finding fails the session (exit status 1, after every test ran) and is listed in the summary
with the test, the section or file, the line and a redacted excerpt.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

from .secrets_seen import Leak, leaks

LOG_FILE_PATTERNS = ("*.out", "*.log")
LOG_FILE_MAX_BYTES = 8 * 1024 * 1024  # the head of a bigger file is scanned
CAPTURED = ("Captured log", "Captured stdout", "Captured stderr")
SESSION = "(session)"


@dataclass(frozen=True)
class Finding:
    test: str  # node id, or the temporary directory's name when no test is known
    where: str  # a report section's title, or a file
    leak: Leak

    def __str__(self) -> str:
        return (
            f"{self.test}: {self.where}, line {self.leak.line}: {self.leak.what}: "
            f"{self.leak.excerpt}"
        )


def scan_sections(
    test: str,
    sections: Iterable[tuple[str, str]],
    when: str,
    secrets: Iterable[str] | None = None,
) -> list[Finding]:
    """The captured sections of one test phase (``when``: setup, call, teardown); ``secrets``
    instead of the remembered ones."""
    found = []
    for title, text in sections:
        if title.startswith(CAPTURED) and title.endswith(when):
            allowed = title.startswith("Captured stdout")
            found += [
                Finding(test, title, leak)
                for leak in leaks(text, secrets, shown_once_allowed=allowed)
            ]
    return found


def log_files(root: Path) -> list[Path]:
    return sorted({p for pattern in LOG_FILE_PATTERNS for p in root.rglob(pattern) if p.is_file()})


def scan_files(
    root: Path, owners: dict[str, str] | None = None, secrets: Iterable[str] | None = None
) -> list[Finding]:
    """Every log file under ``root``; ``owners`` maps a directory right under ``root`` (a test's
    ``tmp_path``) to that test's node id; ``secrets`` instead of the remembered ones."""
    owners = owners or {}
    found = []
    for path in log_files(root):
        with open(path, "rb") as fh:
            text = fh.read(LOG_FILE_MAX_BYTES).decode("utf-8", errors="replace")
        top = path.relative_to(root).parts[0]
        found += [Finding(owners.get(top, top), str(path), leak) for leak in leaks(text, secrets)]
    return found


# --- the plugin -------------------------------------------------------------------------------

_findings: list[Finding] = []
_owners: dict[str, str] = {}
_basetemp: list[Path] = []


@pytest.fixture(scope="session", autouse=True)
def log_scan_basetemp(tmp_path_factory):
    """Where the session's log files are (scanned at session end)."""
    _basetemp.append(tmp_path_factory.getbasetemp())


def pytest_runtest_logreport(report):
    _findings.extend(scan_sections(report.nodeid, report.sections, report.when))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item):
    tmp = (getattr(item, "funcargs", None) or {}).get("tmp_path")
    if isinstance(tmp, Path):
        _owners[tmp.name] = item.nodeid


def pytest_sessionfinish(session):
    for root in _basetemp:
        if root.is_dir():
            _findings.extend(scan_files(root, _owners))
    if _findings and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    if not _findings:
        return
    terminalreporter.section("log scan: secrets in log lines", sep="=", red=True, bold=True)
    for finding in _findings:
        terminalreporter.line(str(finding))
    terminalreporter.line(
        f"{len(_findings)} finding(s): a password, raw key or token reached a log "
        "(tests/log_scan.py says what is scanned)"
    )
