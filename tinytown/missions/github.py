"""The I/O half of the issue compiler: ``git`` finds the default repository, ``gh`` fetches the
issues, and :func:`tinytown.core.issues.compile_issues` does the rest.

Both tools run without a shell, with an argument list, a timeout and their output captured. A
failed fetch does not stop a mission (upstream's rule: the item is titled "Issue #N" with an
empty body), but it is never silent: every fallback comes back as a warning naming the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tinytown.core import defaults
from tinytown.core.issues import (
    Issue,
    IssueRef,
    compile_issues,
    is_bare_number,
    parse_issue_ref,
    repo_from_remote,
)

GIT_REMOTE_TIMEOUT_SECS = 10
GH_ISSUE_VIEW_TIMEOUT_SECS = 30
# gh calls at once: enough to fetch a 100-issue mission in seconds, few enough for rate limits
GH_FETCHES_AT_ONCE = 4
_REASON_MAX_CHARS = 200


def default_repo(cwd: Path | str) -> tuple[str, str] | None:
    """``(owner, repo)`` of the GitHub ``origin`` of the clone at ``cwd``, or None when there is
    no git, no clone, no origin, or the origin is not on GitHub."""
    try:
        # git from PATH (where the operator installed it), fixed arguments, no shell
        proc = subprocess.run(  # nosec B603 B607
            ["git", "remote", "get-url", "origin"],
            cwd=cwd,
            capture_output=True,
            encoding="utf-8",
            errors="replace",
            timeout=GIT_REMOTE_TIMEOUT_SECS,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return repo_from_remote(proc.stdout) if proc.returncode == 0 else None


def gh_available(gh: str = "gh") -> bool:
    """Whether the GitHub CLI ``gh`` (a name on PATH or a path) can be run."""
    return shutil.which(gh) is not None


def fetch_issue(
    ref: IssueRef, *, gh: str = "gh", timeout: float = GH_ISSUE_VIEW_TIMEOUT_SECS
) -> tuple[Issue, str | None]:
    """The issue's title and body from ``gh issue view``, and None; or, when that fails for any
    reason, upstream's fallback (title "Issue #N", empty body) and a warning saying why."""
    argv = [gh, "issue", "view", str(ref.number), "--repo", f"{ref.owner}/{ref.repo}"]
    argv += ["--json", "title,body"]
    try:
        # gh (a name on PATH or a configured path); the issue reference is parsed, no shell
        proc = subprocess.run(  # nosec B603
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            encoding="utf-8",
            errors="replace",
            timeout=timeout,
            env={**os.environ, "GH_PROMPT_DISABLED": "1"},
        )
    except FileNotFoundError:
        return _fallback(ref, f"{gh} is not installed or not on PATH")
    except OSError as err:
        return _fallback(ref, f"{gh} could not be run ({err.strerror or err})")
    except subprocess.TimeoutExpired:
        return _fallback(ref, f"no answer within {timeout:g} s")
    if proc.returncode != 0:
        return _fallback(ref, _first_line(proc.stderr) or f"exit status {proc.returncode}")
    return _issue_from_json(ref, proc.stdout)


def _issue_from_json(ref: IssueRef, output: str) -> tuple[Issue, str | None]:
    """The issue in ``gh``'s JSON answer (a null body is an empty one), or the fallback."""
    try:
        answer = json.loads(output)
    except ValueError:
        return _fallback(ref, "its output is not JSON")
    title = answer.get("title") if isinstance(answer, dict) else None
    body = answer.get("body") if isinstance(answer, dict) else None
    if not isinstance(title, str) or not isinstance(body, str | None):
        return _fallback(ref, "its answer has no text title and body")
    return Issue(ref, title, body or ""), None


def _placeholder(ref: IssueRef) -> Issue:
    """Upstream's stand-in for an issue that could not be fetched."""
    return Issue(ref, f"Issue #{ref.number}", "")


def _fallback(ref: IssueRef, reason: str) -> tuple[Issue, str]:
    issue = _placeholder(ref)
    return issue, f"gh issue view {ref.key} failed: {reason}; using the title {issue.title!r}"


def _first_line(text: str) -> str:
    """The first non-blank line of a tool's message, cut to a length fit for one warning."""
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return line[:_REASON_MAX_CHARS]


def compile_refs(
    refs: list[str],
    *,
    cwd: Path | str,
    manifest: dict | None = None,
    gh: str = "gh",
    budget_secs: float | None = None,
) -> tuple[list[dict], list[str]]:
    """Work items for issue references (as a person types them), and the warnings to show.

    ``budget_secs`` bounds the time spent running ``gh`` in all (townhall compiles inside a
    request): issues not fetched by then keep the placeholder title, with a warning.

    A bare number means an issue of ``cwd``'s GitHub origin (looked up only when one is given).
    A reference given twice is fetched once. Raises ValueError for a bad reference, too many of
    them or a bad manifest, :class:`~tinytown.core.issues.CycleError` for a dependency cycle;
    both before anything is written anywhere.
    """
    if len(refs) > defaults.MISSION_MAX_OBJECTIVES:
        raise ValueError(
            f"a mission takes at most {defaults.MISSION_MAX_OBJECTIVES} issues, not {len(refs)}"
        )
    repo = default_repo(cwd) if any(is_bare_number(ref) for ref in refs) else None
    issue_refs = list(dict.fromkeys(parse_issue_ref(ref, repo) for ref in refs))
    issues, warnings = _fetch_all(issue_refs, gh, budget_secs)
    return compile_issues(issues, manifest), warnings


def _fetch_all(
    refs: list[IssueRef], gh: str, budget_secs: float | None = None
) -> tuple[list[Issue], list[str]]:
    """Every issue, fetched a few at a time, in the order given; one warning when ``gh`` is
    missing altogether rather than one per issue."""
    if refs and not gh_available(gh):
        warning = (
            f"{gh} (the GitHub CLI) is not installed or not on PATH; using the titles "
            f"'Issue #N' and empty bodies for all {len(refs)} issues (install gh and run "
            "gh auth login for real titles and dependencies)"
        )
        return [_placeholder(ref) for ref in refs], [warning]
    deadline = None if budget_secs is None else time.monotonic() + budget_secs

    def fetch(ref: IssueRef) -> tuple[Issue, str | None]:
        if deadline is None:
            return fetch_issue(ref, gh=gh)
        left = deadline - time.monotonic()
        if left <= 0:
            return _fallback(ref, f"not fetched: compiling took its {budget_secs:g} s")
        return fetch_issue(ref, gh=gh, timeout=min(left, GH_ISSUE_VIEW_TIMEOUT_SECS))

    with ThreadPoolExecutor(max_workers=GH_FETCHES_AT_ONCE) as pool:
        fetched = list(pool.map(fetch, refs))
    return [issue for issue, _ in fetched], [warning for _, warning in fetched if warning]
