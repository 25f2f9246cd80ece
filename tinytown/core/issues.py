"""GitHub issues as mission work: references, remotes and the work-graph compiler. Pure.

A mission starts from issue references (``7``, ``owner/repo#7``,
``https://github.com/owner/repo/issues/7``). :func:`parse_issue_ref` reads them,
:func:`repo_from_remote` finds the repository a bare number means from a clone's ``origin``, and
:func:`compile_issues` turns the fetched issues into work items in dependency order.
``tinytown/missions/github.py`` is the I/O half (it runs ``git`` and ``gh``).

The compiler follows upstream's rules (reference §8.2): dependencies come from body phrases
("depends on #1, #2", "after #3", "blocked by #4 & #5", "requires #6 and #7"), kinds and owner
roles from words in the title and body. Those words are matched as **plain substrings**, as
upstream does: "spec" also matches "respect", "ui" matches "build" and "requires", "api" matches
"capital". A manifest corrects what the words get wrong.
"""

from __future__ import annotations

import heapq
import re
from dataclasses import dataclass
from typing import Any, NamedTuple

from tinytown.core import defaults, inputs

MAX_ISSUE_NUMBER = 2**31 - 1
KINDS = ("design", "implement", "test", "review", "mergegate", "followup")
# the manifest may also spell mergegate as upstream's manifest and OpenAPI document do
_KIND_ALIASES = {"merge_gate": "mergegate"}
_MANIFEST_FIELDS = {"kind", "depends_on", "owner_role", "skip"}
_REF_FORMS = (
    "give owner/repo#N, https://github.com/owner/repo/issues/N, or a bare N inside a git "
    "clone whose origin is on GitHub"
)

# GitHub's rules: an owner is 1-39 characters, a repository 1-100, from letters, digits, - _ .
_OWNER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,38}", re.ASCII)
_REPO = re.compile(r"[A-Za-z0-9_.-]{1,100}", re.ASCII)
_BARE = re.compile(r"#?([0-9]{1,10})", re.ASCII)
_SHORT = re.compile(r"([^/\s#]+)/([^/\s#]+)#([0-9]{1,10})", re.ASCII)
_URL = re.compile(
    r"(?:https?://)?(?:www\.)?github\.com/([^/\s]+)/([^/\s]+)/(issues|pull|pulls)/([0-9]{1,10})"
    r"/?(?:[?#]\S*)?",
    re.ASCII | re.IGNORECASE,
)
_REMOTE = re.compile(
    r"(?:(?:https?|git|ssh|git\+ssh)://(?:[^@/\s]+@)?github\.com(?::[0-9]+)?/"
    r"|(?:[^@/\s]+@)?github\.com:)"
    r"([^/\s]+)/([^/\s]+?)(?:\.git)?/?",
    re.ASCII | re.IGNORECASE,
)
# upstream's four dependency phrases, each followed by a list of #N joined by , & or "and"
_ISSUE_LIST = r"#[0-9]+(?:\s*[,&]\s*#[0-9]+|\s+and\s+#[0-9]+)*"
_DEPENDENCY = re.compile(
    rf"(?:depends?\s+on|after|blocked\s+by|requires?)\s+({_ISSUE_LIST})", re.ASCII | re.IGNORECASE
)
_LISTED_NUMBER = re.compile(r"#([0-9]+)", re.ASCII)
_KIND_WORDS = (
    ("design", ("design", "rfc", "proposal")),
    ("test", ("test", "spec")),
    ("review", ("review",)),
    ("mergegate", ("merge",)),
    ("followup", ("followup", "follow-up", "fix")),
)


# --- references -------------------------------------------------------------------------------


def _problem(owner: Any, repo: Any, number: Any) -> str | None:
    """What is wrong with an owner, repository and number by GitHub's rules, or None."""
    if not isinstance(owner, str) or not _OWNER.fullmatch(owner):
        return "an owner is 1-39 letters, digits, '-', '_' or '.', starting with a letter or digit"
    if not isinstance(repo, str) or not _REPO.fullmatch(repo) or repo in (".", ".."):
        return "a repository name is 1-100 letters, digits, '-', '_' or '.'"
    if not isinstance(number, int) or isinstance(number, bool):
        return "an issue number is a whole number"
    if not 1 <= number <= MAX_ISSUE_NUMBER:
        return f"an issue number is between 1 and {MAX_ISSUE_NUMBER}"
    return None


@dataclass(frozen=True)
class IssueRef:
    """One GitHub issue. Always valid by GitHub's naming rules (checked on construction)."""

    owner: str
    repo: str
    number: int

    def __post_init__(self) -> None:
        if problem := _problem(self.owner, self.repo, self.number):
            shown = _shown(f"{self.owner}/{self.repo}#{self.number}")
            raise ValueError(f"{shown} is not a GitHub issue: {problem}")

    @property
    def key(self) -> str:
        """``owner/repo#N``: the work item's key in a mission."""
        return f"{self.owner}/{self.repo}#{self.number}"

    @property
    def source_ref(self) -> str:
        """``owner/repo#N`` (upstream renders ``owner/repo#N/#N``; that quirk is not kept)."""
        return self.key


class Issue(NamedTuple):
    """An issue as fetched: its reference, title and body (either may be empty)."""

    ref: IssueRef
    title: str
    body: str


def _shown(text: str, width: int = 80) -> str:
    """A reference quoted for a message: escaped and cut short, since it came from outside."""
    return ascii(text[:width]) + ("…" if len(text) > width else "")


def _a_type(value: Any) -> str:
    """``an int``, ``a list``: what a value of the wrong type is, for a message."""
    name = type(value).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def is_bare_number(text: str) -> bool:
    """Whether ``text`` is a bare issue number (``7`` or ``#7``), which needs a default repo."""
    return _bare_number(text) is not None


def _bare_number(text: str) -> int | None:
    bare = _BARE.fullmatch(text.strip())
    return int(bare.group(1)) if bare else None


def parse_issue_ref(text: str, default_repo: tuple[str, str] | None) -> IssueRef:
    """Read ``N``/``#N`` (in ``default_repo``), ``owner/repo#N`` or a GitHub issue URL.

    Raises ValueError naming the reference and the forms that are accepted; a pull-request URL
    is refused, since a mission's objectives are issues.
    """
    stripped = text.strip()
    if (bare := _bare_number(stripped)) is not None:
        if default_repo is None:
            raise ValueError(
                f"issue reference {_shown(text)} is a bare number, which needs a repository: "
                f"give owner/repo#{bare}, or run inside a git clone whose origin is on GitHub"
            )
        owner, repo, number = *default_repo, bare
    elif short := _SHORT.fullmatch(stripped):
        owner, repo, number = short.groups()
    elif url := _URL.fullmatch(stripped):
        owner, repo, kind, number = url.groups()
        if kind.lower() != "issues":
            raise ValueError(
                f"issue reference {_shown(text)} is a pull request, not an issue; "
                "give the issue it resolves"
            )
    else:
        raise ValueError(f"issue reference {_shown(text)} is not recognised; {_REF_FORMS}")
    if problem := _problem(owner, repo, int(number)):
        raise ValueError(f"issue reference {_shown(text)} is not valid: {problem}")
    return IssueRef(owner, repo, int(number))


def repo_from_remote(url: str) -> tuple[str, str] | None:
    """``(owner, repo)`` of a GitHub git remote (https, ``git@github.com:``, ``ssh://``), or
    None for any other host or a name GitHub would not allow."""
    match = _REMOTE.fullmatch(url.strip())
    if not match or _problem(*match.groups(), 1):
        return None
    return match.group(1), match.group(2)


# --- the compiler -----------------------------------------------------------------------------


class CycleError(ValueError):
    """Work items that depend on each other in a circle; ``cycle`` lists the keys, first == last."""

    def __init__(self, cycle: list[str]):
        super().__init__(
            f"dependency cycle: {' → '.join(cycle)} (each depends on the next); remove one of "
            "these dependencies from the issues or override depends_on in the manifest"
        )
        self.cycle = cycle


def find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """A cycle in ``graph`` (node → the nodes it points to) as ``[a, b, …, a]``, or None.

    Iterative depth-first search, so a chain of any length cannot reach the recursion limit.
    Nodes that appear only as targets have no edges of their own.
    """
    on_path, finished = set(), set()
    for root in graph:
        if root in finished:
            continue
        path, pending = [root], [iter(graph[root])]
        on_path.add(root)
        while pending:
            target = next(pending[-1], None)
            if target is None:
                node = path.pop()
                on_path.discard(node)
                finished.add(node)
                pending.pop()
            elif target in on_path:
                return path[path.index(target) :] + [target]
            elif target not in finished:
                path.append(target)
                on_path.add(target)
                pending.append(iter(graph.get(target, ())))
    return None


def topological_order(graph: dict[str, list[str]]) -> list[str]:
    """The nodes of ``graph`` (node → the nodes it depends on), each after all its
    dependencies; among nodes free to go, the one listed first in ``graph`` goes first.

    Raises :class:`CycleError` on a cycle, ValueError for a dependency that is not a node.
    """
    nodes = list(graph)
    position = {node: i for i, node in enumerate(nodes)}
    waiting = {node: len(set(deps)) for node, deps in graph.items()}
    dependents: dict[str, list[str]] = {node: [] for node in nodes}
    for node, deps in graph.items():
        for dep in dict.fromkeys(deps):
            if dep not in dependents:
                raise ValueError(f"{node} depends on {dep}, which is not one of the items")
            dependents[dep].append(node)
    free = [position[node] for node in nodes if waiting[node] == 0]
    heapq.heapify(free)
    order = []
    while free:
        node = nodes[heapq.heappop(free)]
        order.append(node)
        for dependent in dependents[node]:
            waiting[dependent] -= 1
            if waiting[dependent] == 0:
                heapq.heappush(free, position[dependent])
    if len(order) < len(nodes):
        raise CycleError(find_cycle(graph))
    return order


def dependencies_in(body: str) -> list[int]:
    """Issue numbers named after "depends on", "after", "blocked by" or "requires", in the
    order they appear (case-insensitive; lists joined by commas, "&" or "and")."""
    numbers: dict[int, None] = {}
    for listed in _DEPENDENCY.finditer(body):
        for digits in _LISTED_NUMBER.findall(listed.group(1)):
            number = int(digits) if len(digits) <= 10 else 0
            if 1 <= number <= MAX_ISSUE_NUMBER:
                numbers[number] = None
    return list(numbers)


def infer_kind(title: str, body: str) -> str:
    """The work kind its words suggest (upstream's order: the first rule that matches wins)."""
    text = f"{title} {body}".lower()
    for kind, words in _KIND_WORDS:
        if any(word in text for word in words):
            return kind
    return "implement"


def infer_owner_role(title: str, body: str, kind: str) -> str | None:
    """The agent role its words and kind suggest (upstream's order), or None for anyone."""
    text = f"{title} {body}".lower()
    if any(word in text for word in ("backend", "api", "server")):
        return "backend"
    if any(word in text for word in ("frontend", "ui", "web")):
        return "frontend"
    if kind == "test" or "qa owner" in text:
        return "tester"
    if kind == "review":
        return "reviewer"
    if any(word in text for word in ("devops", "infrastructure", "deploy")):
        return "devops"
    return None


def compile_issues(issues: list[Issue], manifest: dict | None = None) -> list[dict]:
    """Work items for a mission's issues, each after the items it depends on.

    A dependency counts only when it is another issue of the same mission (``#N`` in a body
    means issue N of the body's own repository); self-references are dropped. ``manifest`` maps
    an issue key (``owner/repo#N``, or ``#N`` when only one issue has that number) to overrides:
    ``kind``, ``depends_on`` (references; ``#N`` is in the issue's repository), ``owner_role``
    and ``skip``. A skipped issue yields no item and its dependents lose that dependency.
    The owner role is inferred from the inferred kind, before any override, as upstream does.
    A repeated issue counts once. Raises ValueError for more than
    ``defaults.MISSION_MAX_OBJECTIVES`` issues or a bad manifest, :class:`CycleError` for a cycle.
    """
    if len(issues) > defaults.MISSION_MAX_OBJECTIVES:
        raise ValueError(
            f"a mission compiles at most {defaults.MISSION_MAX_OBJECTIVES} issues, "
            f"not {len(issues)}; split it into several missions"
        )
    by_key: dict[str, Issue] = {}
    for issue in issues:
        by_key.setdefault(issue.ref.key, issue)
    overrides = _resolve_manifest({} if manifest is None else manifest, by_key)
    items = {
        key: _work_item(issue, overrides.get(key, {}))
        for key, issue in by_key.items()
        if not overrides.get(key, {}).get("skip", False)
    }
    for key, item in items.items():
        item["depends_on"] = [dep for dep in item["depends_on"] if dep in items and dep != key]
    order = topological_order({key: item["depends_on"] for key, item in items.items()})
    return [items[key] for key in order]


def _work_item(issue: Issue, override: dict) -> dict:
    """One issue's work item by upstream's rules, then its manifest override. Its
    ``depends_on`` may still name issues outside the mission; the caller prunes them."""
    ref, title, body = issue
    kind = infer_kind(title, body)
    role = infer_owner_role(title, body, kind)
    deps = [IssueRef(ref.owner, ref.repo, number).key for number in dependencies_in(body)]
    if "depends_on" in override:
        deps = override["depends_on"]
    return {
        "key": ref.key,
        "title": title or f"Issue #{ref.number}",
        "description": body,
        "kind": override.get("kind", kind),
        "depends_on": deps,
        "owner_role": override.get("owner_role", role),
        "tags": [],
        "source_ref": ref.source_ref,
    }


def _resolve_manifest(manifest: dict, by_key: dict[str, Issue]) -> dict[str, dict]:
    """The manifest's checked overrides by issue key. Entries for issues outside the mission are
    ignored (a manifest may describe more issues than one mission starts)."""
    if not isinstance(manifest, dict):
        raise ValueError("the mission manifest must map issue keys to tables of overrides")
    resolved: dict[str, dict] = {}
    for name, entry in manifest.items():
        for key in _manifest_targets(name, by_key):
            if key in resolved:
                raise ValueError(f"the manifest names {key} twice; keep one entry for it")
            resolved[key] = _manifest_entry(name, entry, by_key[key].ref)
    return resolved


def _manifest_targets(name: Any, by_key: dict[str, Issue]) -> list[str]:
    """The mission's issue keys a manifest entry's name means (none, or exactly one)."""
    if not isinstance(name, str):
        raise ValueError(f"a manifest entry is named by {_a_type(name)}; use owner/repo#N")
    if (number := _bare_number(name)) is not None:
        keys = [key for key, issue in by_key.items() if issue.ref.number == number]
        if len(keys) > 1:
            raise ValueError(
                f"manifest entry {_shown(name)} matches {', '.join(keys)}; name it owner/repo#N"
            )
        return keys
    key = parse_issue_ref(name, None).key
    return [key] if key in by_key else []


def _manifest_entry(name: str, entry: Any, ref: IssueRef) -> dict:
    """A manifest entry checked: known fields with values of the right kind."""
    where = f"manifest entry {_shown(name)}"
    if not isinstance(entry, dict):
        raise ValueError(f"{where} must be a table of {', '.join(sorted(_MANIFEST_FIELDS))}")
    if unknown := set(entry) - _MANIFEST_FIELDS:
        raise ValueError(
            f"{where} has unknown field(s) {', '.join(sorted(map(str, unknown)))}; "
            f"known: {', '.join(sorted(_MANIFEST_FIELDS))}"
        )
    checked = dict(entry)
    if "kind" in entry:
        checked["kind"] = _manifest_kind(where, entry["kind"])
    if "depends_on" in entry:
        checked["depends_on"] = _manifest_dependencies(where, entry["depends_on"], ref)
    if (role := entry.get("owner_role")) is not None:
        if not isinstance(role, str):
            raise ValueError(f"{where}: owner_role is {_a_type(role)}, not a role name")
        try:
            inputs.name(role, "owner_role")
        except inputs.InputError as err:
            raise ValueError(f"{where}: {err}") from None
    if not isinstance(entry.get("skip", False), bool):
        raise ValueError(f"{where}: skip must be true or false")
    return checked


def _manifest_kind(where: str, kind: Any) -> str:
    """A manifest's kind, lowercased, with upstream's ``merge_gate`` read as ``mergegate``."""
    known = kind.lower() if isinstance(kind, str) else None
    known = _KIND_ALIASES.get(known, known)
    if known not in KINDS:
        shown = _shown(kind) if isinstance(kind, str) else _a_type(kind)
        raise ValueError(f"{where}: kind {shown} is not one of {', '.join(KINDS)}")
    return known


def _manifest_dependencies(where: str, deps: Any, ref: IssueRef) -> list[str]:
    """A manifest's ``depends_on`` as issue keys; ``N`` and ``#N`` are in ``ref``'s repository."""
    if not isinstance(deps, list) or len(deps) > defaults.MISSION_MAX_OBJECTIVES:
        raise ValueError(
            f"{where}: depends_on must be a list of at most "
            f"{defaults.MISSION_MAX_OBJECTIVES} issue references"
        )
    keys = []
    for dep in deps:
        if isinstance(dep, bool) or not isinstance(dep, str | int):
            raise ValueError(f"{where}: depends_on holds {_a_type(dep)}, not an issue reference")
        keys.append(parse_issue_ref(str(dep), (ref.owner, ref.repo)).key)
    return list(dict.fromkeys(keys))
