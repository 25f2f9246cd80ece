#!/usr/bin/env python3
"""Audit the lock (requirements.lock) for known vulnerabilities with pip-audit, where its
database can be reached.

    python scripts/audit_lock.py [--pip-audit PATH] [--requirements FILE] [--timeout SECS]

Runs ``pip-audit -r requirements.lock --no-deps --disable-pip -f json`` (every version in the
lock is pinned, so nothing is resolved or installed) against PyPI's JSON API, then decides:

- any known vulnerability: exit 1, each listed with its fix versions. Checked first, so nothing
  below can hide one;
- the service cannot be reached (pip-audit stopped on a connection error: DNS, refused,
  timeout, TLS), or it answered for none of the pinned packages (every one "not found on PyPI":
  a stand-in, a captive portal or a mirror without the JSON API): exit 0 with one line
  ``pip-audit skipped: <reason>``;
- otherwise exit 0, with the number of packages audited and any not audited (named).

Any other failure of pip-audit is exit 1 with its output: an audit that did not run is not a
pass. ``.ci/run`` runs this after the lint step.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TIMEOUT_SECS = 15
# What pip-audit (through requests/urllib3) says when the service cannot be reached at all.
UNREACHABLE = re.compile(
    r"your network may be blocking this service|Max retries exceeded|NameResolutionError|"
    r"Failed to resolve|Name or service not known|Temporary failure in name resolution|"
    r"Connection refused|Network is unreachable|timed out|ConnectTimeout|ReadTimeout|SSLError|"
    r"CERTIFICATE_VERIFY_FAILED|Could not connect to PyPI"
)


@dataclass(frozen=True)
class Verdict:
    exit_status: int  # 0 clean or skipped, 1 vulnerable or failed
    lines: list[str]


def verdict(returncode: int, report: dict | None, stderr: str) -> Verdict:
    """What one pip-audit run means; ``report`` is its JSON output (None: none was written)."""
    if report is not None:
        deps = report.get("dependencies", [])
        vulnerable = [d for d in deps if d.get("vulns")]
        if vulnerable:
            lines = [f"pip-audit: {len(vulnerable)} locked package(s) with known vulnerabilities:"]
            for dep in vulnerable:
                for vuln in dep["vulns"]:
                    fixes = ", ".join(vuln.get("fix_versions") or []) or "no fix released"
                    lines.append(
                        f"  {dep['name']} {dep['version']}: {vuln['id']} (fixed in {fixes})"
                    )
            return Verdict(1, lines)
        skipped = [d for d in deps if d.get("skip_reason")]
        audited = len(deps) - len(skipped)
        if deps and not audited:
            return Verdict(
                0,
                [
                    f"pip-audit skipped: the vulnerability service answered for none of the "
                    f"{len(deps)} locked packages ({skipped[0]['skip_reason']}); its database "
                    "is not reachable from here"
                ],
            )
        if returncode == 0:
            lines = [f"pip-audit: {audited} locked packages audited, no known vulnerabilities"]
            if skipped:
                names = ", ".join(d["name"] for d in skipped)
                lines.append(f"pip-audit: not audited (not found on the service): {names}")
            return Verdict(0, lines)
    if returncode != 0 and (found := UNREACHABLE.search(stderr)):
        detail = next(
            (line.strip() for line in reversed(stderr.splitlines()) if found[0] in line),
            found[0],
        )
        return Verdict(
            0, [f"pip-audit skipped: the vulnerability service is unreachable: {detail}"]
        )
    tail = "\n".join(stderr.strip().splitlines()[-20:])
    return Verdict(1, [f"pip-audit failed (exit {returncode}) without an audit:", tail])


def run(pip_audit: str, requirements: Path, timeout: int) -> Verdict:
    with tempfile.TemporaryDirectory(prefix="tt-pip-audit-") as tmp:
        out = Path(tmp) / "report.json"
        proc = subprocess.run(
            [pip_audit, "-r", str(requirements), "--no-deps", "--disable-pip",
             "--progress-spinner", "off", "--timeout", str(timeout), "-f", "json", "-o", str(out)],
            capture_output=True,
            text=True,
        )  # fmt: skip
        try:
            report = json.loads(out.read_text()) if out.exists() else None
        except json.JSONDecodeError:
            report = None
    return verdict(proc.returncode, report, proc.stderr)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pip-audit", default="pip-audit", help="the pip-audit executable")
    ap.add_argument("--requirements", type=Path, default=ROOT / "requirements.lock")
    ap.add_argument(
        "--timeout",
        type=int,
        default=DEFAULT_TIMEOUT_SECS,
        help="seconds per request to the service (default %(default)s)",
    )
    args = ap.parse_args(argv)
    result = run(args.pip_audit, args.requirements, args.timeout)
    print("\n".join(result.lines), file=sys.stderr if result.exit_status else sys.stdout)
    return result.exit_status


if __name__ == "__main__":
    sys.exit(main())
