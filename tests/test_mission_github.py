"""The issue compiler's I/O half (tinytown.missions.github) against real processes: a real
``git`` clone, and a stand-in ``gh`` executable that answers ``gh issue view`` from a fixture
file and records every command line it was given."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tinytown.core.issues import IssueRef
from tinytown.missions.github import compile_refs, default_repo, fetch_issue, gh_available

NOT_FOUND = "GraphQL: Could not resolve to an issue or pull request with the number of {}."
FAKE_GH = """#!{python}
import json, sys, time

argv = sys.argv[1:]
with open({calls!r}, "a") as calls:
    calls.write(json.dumps(argv) + "\\n")
answers = json.load(open({answers!r}))
number, repo = argv[2], argv[4]
answer = answers.get(f"{{repo}}#{{number}}")
if argv[:2] != ["issue", "view"] or argv[5:] != ["--json", "title,body"] or answer is None:
    print({not_found!r}.format(number), file=sys.stderr)
    sys.exit(1)
if isinstance(answer, dict) and "sleep" in answer:
    time.sleep(answer["sleep"])
print(answer if isinstance(answer, str) else json.dumps(answer))
"""


class FakeGh:
    """A ``gh`` stand-in in ``tmp_path/bin``: ``answers`` maps ``owner/repo#N`` to the JSON it
    prints (a string is printed as it is); any other issue exits 1 as ``gh`` does."""

    def __init__(self, root: Path):
        self.bin = root / "bin"
        self.bin.mkdir()
        self.path = self.bin / "gh"
        self.answers_file, self.calls_file = root / "answers.json", root / "calls.jsonl"
        self.answer({})
        self.path.write_text(
            FAKE_GH.format(
                python=sys.executable,
                calls=str(self.calls_file),
                answers=str(self.answers_file),
                not_found=NOT_FOUND,
            )
        )
        self.path.chmod(0o755)

    def answer(self, answers: dict) -> None:
        self.answers_file.write_text(json.dumps(answers))

    def calls(self) -> list[list[str]]:
        if not self.calls_file.exists():
            return []
        return [json.loads(line) for line in self.calls_file.read_text().splitlines()]


@pytest.fixture
def gh(tmp_path) -> FakeGh:
    return FakeGh(tmp_path)


@pytest.fixture
def outside_any_clone(tmp_path, monkeypatch) -> Path:
    """A directory git will not search above for a clone."""
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    plain = tmp_path / "plain"
    plain.mkdir()
    return plain


def clone_with_origin(root: Path, origin: str | None) -> Path:
    root.mkdir()
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    if origin:
        subprocess.run(["git", "remote", "add", "origin", origin], cwd=root, check=True)
    return root


def issue_view(number: int, repo: str = "acme/widgets") -> list[str]:
    return ["issue", "view", str(number), "--repo", repo, "--json", "title,body"]


def test_three_issues_compile_in_dependency_order(gh, outside_any_clone):
    gh.answer(
        {
            "acme/widgets#3": {"title": "Wire it up", "body": "Depends on #1 and #2"},
            "acme/widgets#1": {"title": "Add the model", "body": ""},
            "acme/widgets#2": {"title": "Add the view", "body": "after #1"},
        }
    )
    refs = ["acme/widgets#3", "acme/widgets#1", "https://github.com/acme/widgets/issues/2"]
    items, warnings = compile_refs(refs, cwd=outside_any_clone, gh=str(gh.path))
    assert warnings == []
    assert [(item["key"], item["title"], item["depends_on"]) for item in items] == [
        ("acme/widgets#1", "Add the model", []),
        ("acme/widgets#2", "Add the view", ["acme/widgets#1"]),
        ("acme/widgets#3", "Wire it up", ["acme/widgets#1", "acme/widgets#2"]),
    ]
    assert sorted(gh.calls()) == sorted(issue_view(n) for n in (1, 2, 3))


def test_a_failing_issue_falls_back_to_its_number_with_a_warning(gh, outside_any_clone):
    gh.answer({"acme/widgets#1": {"title": "Add the model", "body": ""}})
    items, warnings = compile_refs(
        ["acme/widgets#1", "acme/widgets#9"], cwd=outside_any_clone, gh=str(gh.path)
    )
    assert [(item["title"], item["description"]) for item in items] == [
        ("Add the model", ""),
        ("Issue #9", ""),
    ]
    assert warnings == [
        f"gh issue view acme/widgets#9 failed: {NOT_FOUND.format(9)}; using the title 'Issue #9'"
    ]


def test_a_bare_number_means_an_issue_of_the_clones_github_origin(gh, tmp_path):
    clone = clone_with_origin(tmp_path / "widgets", "git@github.com:acme/widgets.git")
    gh.answer({"acme/widgets#7": {"title": "Seven", "body": "requires #6"}})
    assert default_repo(clone) == ("acme", "widgets")
    items, warnings = compile_refs(["7"], cwd=clone, gh=str(gh.path))
    assert (items[0]["key"], items[0]["title"], warnings) == ("acme/widgets#7", "Seven", [])
    assert gh.calls() == [issue_view(7)]


def test_a_bare_number_outside_a_clone_is_refused_before_gh_runs(gh, outside_any_clone):
    with pytest.raises(ValueError) as err:
        compile_refs(["acme/widgets#1", "7"], cwd=outside_any_clone, gh=str(gh.path))
    assert str(err.value) == (
        "issue reference '7' is a bare number, which needs a repository: give owner/repo#7, "
        "or run inside a git clone whose origin is on GitHub"
    )
    assert gh.calls() == []


@pytest.mark.parametrize("origin", [None, "https://gitlab.com/acme/widgets.git"])
def test_a_clone_without_a_github_origin_has_no_default_repo(tmp_path, origin):
    assert default_repo(clone_with_origin(tmp_path / "clone", origin)) is None


def test_no_default_repo_outside_a_clone_or_in_a_missing_directory(outside_any_clone):
    assert default_repo(outside_any_clone) is None
    assert default_repo(outside_any_clone / "missing") is None


def test_gh_is_found_on_path(gh, outside_any_clone, monkeypatch):
    monkeypatch.setenv("PATH", f"{gh.bin}{os.pathsep}{os.environ['PATH']}")
    gh.answer({"acme/widgets#4": {"title": "Four", "body": ""}})
    assert gh_available()
    items, _ = compile_refs(["acme/widgets#4"], cwd=outside_any_clone)
    assert items[0]["title"] == "Four"


def test_a_reference_given_twice_is_fetched_once(gh, outside_any_clone):
    gh.answer({"acme/widgets#1": {"title": "One", "body": ""}})
    refs = ["acme/widgets#1", "https://github.com/acme/widgets/issues/1"]
    items, _ = compile_refs(refs, cwd=outside_any_clone, gh=str(gh.path))
    assert len(items) == 1
    assert gh.calls() == [issue_view(1)]


def test_without_gh_every_issue_falls_back_with_one_warning(tmp_path, outside_any_clone):
    missing = str(tmp_path / "no-such-gh")
    assert not gh_available(missing)
    items, warnings = compile_refs(["o/r#1", "o/r#2"], cwd=outside_any_clone, gh=missing)
    assert [item["title"] for item in items] == ["Issue #1", "Issue #2"]
    assert len(warnings) == 1
    assert "is not installed or not on PATH" in warnings[0]
    assert "all 2 issues" in warnings[0]


def test_fetch_reports_gh_missing(tmp_path):
    issue, warning = fetch_issue(IssueRef("o", "r", 5), gh=str(tmp_path / "no-such-gh"))
    assert (issue.title, issue.body) == ("Issue #5", "")
    assert "is not installed or not on PATH; using the title 'Issue #5'" in warning


@pytest.mark.parametrize(
    "answer, reason",
    [
        ("not json", "its output is not JSON"),
        ({"title": 5, "body": ""}, "its answer has no text title and body"),
        ({"body": ""}, "its answer has no text title and body"),
        (["a list"], "its answer has no text title and body"),
    ],
)
def test_fetch_falls_back_on_an_answer_it_cannot_read(gh, answer, reason):
    gh.answer({"o/r#5": answer})
    issue, warning = fetch_issue(IssueRef("o", "r", 5), gh=str(gh.path))
    assert (issue.title, issue.body) == ("Issue #5", "")
    assert warning == f"gh issue view o/r#5 failed: {reason}; using the title 'Issue #5'"


def test_fetch_reads_a_null_body_as_empty(gh):
    gh.answer({"o/r#5": {"title": "Five", "body": None}})
    assert fetch_issue(IssueRef("o", "r", 5), gh=str(gh.path)) == (
        (IssueRef("o", "r", 5), "Five", ""),
        None,
    )


def test_fetch_gives_up_on_a_gh_that_does_not_answer(gh):
    gh.answer({"o/r#5": {"sleep": 30}})
    issue, warning = fetch_issue(IssueRef("o", "r", 5), gh=str(gh.path), timeout=0.5)
    assert issue.title == "Issue #5"
    assert "failed: no answer within 0.5 s" in warning
