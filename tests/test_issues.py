"""The issue compiler's pure half (tinytown.core.issues): references, remotes, dependency
phrases, kinds and roles, manifests, order and cycles. No server, no process."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinytown.core.issues import (
    CycleError,
    Issue,
    IssueRef,
    compile_issues,
    dependencies_in,
    find_cycle,
    infer_kind,
    infer_owner_role,
    parse_issue_ref,
    repo_from_remote,
    topological_order,
)

ACME = ("acme", "widgets")


def issue(number: int, title: str = "", body: str = "", repo=ACME) -> Issue:
    return Issue(IssueRef(*repo, number), title, body)


def keys(items: list[dict]) -> list[str]:
    return [item["key"] for item in items]


# --- references -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, default, expected",
    [
        ("7", ACME, ("acme", "widgets", 7)),
        ("#7", ACME, ("acme", "widgets", 7)),
        ("  7\n", ACME, ("acme", "widgets", 7)),
        ("octo/hello-world#23", None, ("octo", "hello-world", 23)),
        ("octo/hello-world#23", ACME, ("octo", "hello-world", 23)),
        ("my_org/.github#1", None, ("my_org", ".github", 1)),
        ("https://github.com/octo/repo.js/issues/5", None, ("octo", "repo.js", 5)),
        ("http://www.github.com/octo/repo/issues/5/", None, ("octo", "repo", 5)),
        ("github.com/octo/repo/issues/5", None, ("octo", "repo", 5)),
        ("https://github.com/octo/repo/issues/5#issuecomment-99", None, ("octo", "repo", 5)),
        ("https://github.com/octo/repo/issues/5?q=1", None, ("octo", "repo", 5)),
        (f"o/r#{2**31 - 1}", None, ("o", "r", 2**31 - 1)),
    ],
)
def test_every_reference_form_names_its_issue(text, default, expected):
    ref = parse_issue_ref(text, default)
    assert (ref.owner, ref.repo, ref.number) == expected


@pytest.mark.parametrize(
    "text, message",
    [
        ("7", "bare number, which needs a repository: give owner/repo#7, or run inside a git"),
        ("#7", "bare number"),
        ("0", "between 1 and 2147483647"),
        ("o/r#0", "between 1 and 2147483647"),
        (f"o/r#{2**31}", "between 1 and 2147483647"),
        ("o/r#12345678901", "is not recognised; give owner/repo#N"),
        ("o/r#-1", "is not recognised"),
        ("o/r#7a", "is not recognised"),
        ("o/r", "is not recognised"),
        ("o#7", "is not recognised"),
        ("o/r/x#7", "is not recognised"),
        ("", "is not recognised"),
        ("seven", "is not recognised"),
        ("o/r#٣", "is not recognised"),  # an Arabic-Indic digit is not an issue number
        ("bad owner/r#7", "is not recognised"),
        ("-acme/r#7", "an owner is 1-39 letters"),
        (f"{'a' * 40}/r#7", "an owner is 1-39 letters"),
        ("acme/wid*gets#7", "a repository name is 1-100"),
        (f"acme/{'r' * 101}#7", "a repository name is 1-100"),
        ("acme/..#7", "a repository name is 1-100"),
        ("https://github.com/octo/repo/pull/5", "is a pull request, not an issue"),
        ("https://gitlab.com/octo/repo/issues/5", "is not recognised"),
        ("https://github.com/octo/repo/issues/", "is not recognised"),
        ("https://github.com/octo/repo/discussions/5", "is not recognised"),
    ],
)
def test_a_bad_reference_is_refused_with_a_message_naming_it(text, message):
    with pytest.raises(ValueError) as err:
        parse_issue_ref(text, None if text in ("7", "#7") else ACME)
    assert message in str(err.value)
    assert ascii(text.strip()[:80]) in str(err.value)
    assert "\n" not in str(err.value)


def test_a_long_reference_is_cut_short_in_the_message():
    with pytest.raises(ValueError) as err:
        parse_issue_ref("x" * 10_000, None)
    assert len(str(err.value)) < 300


def test_a_reference_key_and_source_ref_are_owner_repo_number():
    ref = IssueRef("octo", "repo", 23)
    assert ref.key == ref.source_ref == "octo/repo#23"


def test_an_invalid_issue_ref_cannot_be_built():
    with pytest.raises(ValueError, match="is not a GitHub issue"):
        IssueRef("octo", "re po", 1)
    with pytest.raises(ValueError, match="whole number"):
        IssueRef("octo", "repo", True)


@pytest.mark.parametrize(
    "url, expected",
    [
        ("https://github.com/acme/widgets", ACME),
        ("https://github.com/acme/widgets.git", ACME),
        ("https://github.com/acme/widgets/", ACME),
        ("https://x-access-token:secret@github.com/acme/widgets.git", ACME),
        ("git@github.com:acme/widgets.git", ACME),
        ("git@github.com:acme/widgets", ACME),
        ("ssh://git@github.com/acme/widgets.git", ACME),
        ("ssh://git@github.com:22/acme/widgets.git", ACME),
        ("git://github.com/acme/widgets.git", ACME),
        ("https://GitHub.com/acme/widgets\n", ACME),
        ("https://gitlab.com/acme/widgets.git", None),
        ("git@gitlab.com:acme/widgets.git", None),
        ("https://github.com.evil.example/acme/widgets", None),
        ("https://evilgithub.com/acme/widgets", None),
        ("https://github.com/acme", None),
        ("https://github.com/acme/widgets/tree/main", None),
        ("https://github.com/-acme/widgets", None),
        ("/srv/git/widgets.git", None),
        ("", None),
    ],
)
def test_the_repository_of_a_git_remote(url, expected):
    assert repo_from_remote(url) == expected


# --- dependency phrases -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, expected",
    [
        ("Depends on #1", [1]),
        ("depends on #1, #2", [1, 2]),
        ("DEPENDS ON #1 & #2 and #3", [1, 2, 3]),
        ("depend on #4", [4]),
        ("Do this after #5", [5]),
        ("Blocked by #6,#7", [6, 7]),
        ("blocked  by\n#8", [8]),
        ("Requires #9 and #10", [9, 10]),
        ("require #11", [11]),
        ("depends on #2, #1 and #2", [2, 1]),
        ("blocked by #3\nafter #1", [3, 1]),
        ("see #4; fixes #5", []),
        ("depends on issue #6", []),
        ("depends on #1 or #2", [1]),
        ("after #0 and #99999999999", []),
        ("", []),
    ],
)
def test_dependencies_come_from_the_four_phrases_and_their_lists(body, expected):
    assert dependencies_in(body) == expected


def test_a_body_dependency_is_an_issue_of_the_same_repository():
    items = compile_issues([issue(1), issue(2, body="depends on #1")])
    assert items[1]["depends_on"] == ["acme/widgets#1"]


def test_dependencies_outside_the_mission_are_dropped():
    other = ("acme", "gadgets")
    items = compile_issues([issue(1, repo=other), issue(2, body="depends on #1, #5")])
    assert [item["depends_on"] for item in items] == [[], []]


def test_an_issue_that_depends_on_itself_does_not():
    assert compile_issues([issue(3, body="blocked by #3")])[0]["depends_on"] == []


# --- kinds and roles --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "title, body, kind",
    [
        ("Design the cache", "", "design"),
        ("RFC: retries", "", "design"),
        ("Add it", "see the proposal", "design"),
        ("Design tests", "", "design"),  # design is checked first
        ("Add tests", "", "test"),
        ("Write the spec", "", "test"),
        ("Treat it with respect", "", "test"),  # a plain substring, as upstream
        ("Review the PR", "", "review"),
        ("Merge when green", "", "mergegate"),
        ("Followup on #2", "", "followup"),
        ("Follow-up", "", "followup"),
        ("Fix the crash", "", "followup"),
        ("Prefix keys", "", "followup"),  # "fix" inside "prefix"
        ("Add a cache", "", "implement"),
    ],
)
def test_the_kind_follows_upstreams_words_in_upstreams_order(title, body, kind):
    assert infer_kind(title, body) == kind


@pytest.mark.parametrize(
    "title, body, kind, role",
    [
        ("Backend cache", "", "implement", "backend"),
        ("Add an API route", "", "implement", "backend"),
        ("Server timeouts", "", "implement", "backend"),
        ("Frontend form", "", "implement", "frontend"),
        ("UI polish", "", "implement", "frontend"),
        ("Web page", "", "implement", "frontend"),
        ("Add it", "", "test", "tester"),
        ("Add it", "QA owner: Sam", "implement", "tester"),
        ("Add it", "", "review", "reviewer"),
        ("DevOps", "", "implement", "devops"),
        ("Infrastructure", "", "implement", "devops"),
        ("Deploy it", "", "implement", "devops"),
        ("Add it", "", "implement", None),
        ("API web page", "", "test", "backend"),  # backend words win over everything
        ("Web deploy", "", "review", "frontend"),
        ("Build it", "", "implement", "frontend"),  # "ui" inside "build", as upstream
    ],
)
def test_the_owner_role_follows_upstreams_words_in_upstreams_order(title, body, kind, role):
    assert infer_owner_role(title, body, kind) == role


def test_an_item_carries_its_issue():
    [item] = compile_issues([issue(7, "Add a cache", "Make it fast")])
    assert item == {
        "key": "acme/widgets#7",
        "title": "Add a cache",
        "description": "Make it fast",
        "kind": "implement",
        "depends_on": [],
        "owner_role": None,
        "tags": [],
        "source_ref": "acme/widgets#7",
    }


def test_an_untitled_issue_is_called_by_its_number():
    assert compile_issues([issue(7)])[0]["title"] == "Issue #7"


def test_a_repeated_issue_counts_once():
    assert keys(compile_issues([issue(1, "first"), issue(1, "again")])) == ["acme/widgets#1"]


def test_a_mission_compiles_at_most_a_hundred_issues():
    compile_issues([issue(n) for n in range(1, 101)])
    with pytest.raises(ValueError, match="at most 100 issues, not 101"):
        compile_issues([issue(n) for n in range(1, 102)])


# --- manifest ---------------------------------------------------------------------------------


def test_the_manifest_overrides_kind_dependencies_and_role():
    issues = [issue(1), issue(2), issue(3, "Backend work", "depends on #1")]
    manifest = {"acme/widgets#3": {"kind": "review", "depends_on": ["#2"], "owner_role": "qa"}}
    item = compile_issues(issues, manifest)[-1]
    assert (item["kind"], item["depends_on"], item["owner_role"]) == (
        "review",
        ["acme/widgets#2"],
        "qa",
    )


def test_a_manifest_entry_may_be_named_by_number_alone():
    items = compile_issues([issue(1), issue(2)], {"#2": {"depends_on": [1]}})
    assert items[1]["depends_on"] == ["acme/widgets#1"]


def test_the_manifest_may_clear_dependencies_and_role():
    items = compile_issues(
        [issue(1), issue(2, "API", "after #1")], {"#2": {"depends_on": [], "owner_role": None}}
    )
    assert (items[1]["depends_on"], items[1]["owner_role"]) == ([], None)


def test_the_manifest_kind_accepts_upstreams_merge_gate_spelling():
    assert compile_issues([issue(1)], {"#1": {"kind": "Merge_Gate"}})[0]["kind"] == "mergegate"


def test_a_manifest_kind_does_not_change_the_inferred_role():
    assert compile_issues([issue(1)], {"#1": {"kind": "test"}})[0]["owner_role"] is None


def test_a_skipped_issue_leaves_and_its_dependents_lose_it():
    issues = [issue(1), issue(2, body="depends on #1"), issue(3, body="after #1 and #2")]
    items = compile_issues(issues, {"acme/widgets#1": {"skip": True}})
    assert keys(items) == ["acme/widgets#2", "acme/widgets#3"]
    assert [item["depends_on"] for item in items] == [[], ["acme/widgets#2"]]


def test_manifest_entries_for_other_issues_are_ignored():
    assert keys(compile_issues([issue(1)], {"acme/widgets#9": {"skip": True}})) == [
        "acme/widgets#1"
    ]


@pytest.mark.parametrize(
    "manifest, message",
    [
        ([], "must map issue keys"),
        ({"#1": "skip"}, "must be a table of"),
        ({"#1": {"depends-on": [2]}}, "unknown field(s) depends-on"),
        ({"#1": {"kind": "chore"}}, "kind 'chore' is not one of design, implement"),
        ({"#1": {"kind": 3}}, "kind an int is not one of"),
        ({"#1": {"kind": ["test"]}}, "kind a list is not one of"),
        ({"#1": {"depends_on": "#2"}}, "depends_on must be a list"),
        ({"#1": {"depends_on": [True]}}, "depends_on holds a bool, not an issue reference"),
        ({"#1": {"depends_on": ["o/r"]}}, "issue reference 'o/r' is not recognised"),
        ({"#1": {"owner_role": 5}}, "owner_role is an int, not a role name"),
        (
            {"#1": {"owner_role": "back end"}},
            "'#1': field 'owner_role' is 'back end'; a name is 1-64",
        ),
        ({"#1": {"skip": "yes"}}, "skip must be true or false"),
        ({"#1": {}, "acme/widgets#1": {}}, "names acme/widgets#1 twice"),
        ({"#2": {}}, "matches acme/widgets#2, acme/gadgets#2; name it owner/repo#N"),
        ({7: {}}, "a manifest entry is named by an int; use owner/repo#N"),
    ],
)
def test_a_bad_manifest_is_refused_with_the_reason(manifest, message):
    issues = [issue(1), issue(2), issue(2, repo=("acme", "gadgets"))]
    with pytest.raises(ValueError) as err:
        compile_issues(issues, manifest)
    assert message in str(err.value)


# --- order and cycles -------------------------------------------------------------------------


def test_items_come_after_their_dependencies_and_otherwise_in_input_order():
    issues = [
        issue(5, body="depends on #4"),
        issue(1),
        issue(4, body="blocked by #2"),
        issue(2),
        issue(3),
    ]
    assert [key.split("#")[1] for key in keys(compile_issues(issues))] == ["1", "2", "4", "5", "3"]


def test_a_cycle_is_refused_and_the_message_names_it():
    issues = [issue(1, body="depends on #2"), issue(2, body="after #3"), issue(3, body="after #1")]
    with pytest.raises(CycleError) as err:
        compile_issues(issues)
    assert err.value.cycle == [
        "acme/widgets#1",
        "acme/widgets#2",
        "acme/widgets#3",
        "acme/widgets#1",
    ]
    assert str(err.value).startswith(
        "dependency cycle: acme/widgets#1 → acme/widgets#2 → acme/widgets#3 → acme/widgets#1"
    )


def test_a_manifest_can_break_a_cycle():
    issues = [issue(1, body="depends on #2"), issue(2, body="depends on #1")]
    assert keys(compile_issues(issues, {"#1": {"depends_on": []}})) == [
        "acme/widgets#1",
        "acme/widgets#2",
    ]


def test_find_cycle_returns_none_for_a_graph_without_one():
    assert find_cycle({"a": ["b", "c"], "b": ["c"], "c": [], "d": ["x"]}) is None


def test_find_cycle_finds_a_self_loop():
    assert find_cycle({"a": ["b"], "b": ["b"]}) == ["b", "b"]


def test_find_cycle_walks_a_long_chain_without_recursion():
    nodes = [f"n{i}" for i in range(5000)]
    graph = {node: [nxt] for node, nxt in zip(nodes, nodes[1:])} | {nodes[-1]: [nodes[0]]}
    assert find_cycle(graph) == nodes + [nodes[0]]
    del graph[nodes[-1]]
    assert find_cycle(graph) is None


def test_topological_order_refuses_a_dependency_that_is_not_an_item():
    with pytest.raises(ValueError, match="a depends on b, which is not one of the items"):
        topological_order({"a": ["b"]})


@st.composite
def dags(draw):
    """Issue numbers 1..n in a random input order; issue i depends only on lower numbers."""
    size = draw(st.integers(1, 30))
    deps = {
        n: draw(st.lists(st.integers(1, n - 1), max_size=4)) if n > 1 else []
        for n in range(1, size + 1)
    }
    return draw(st.permutations(list(deps))), deps


@settings(deadline=None)
@given(dags())
def test_any_dag_compiles_with_every_item_after_its_dependencies(dag):
    order, deps = dag
    issues = [issue(n, body=" ".join(f"after #{d}" for d in deps[n])) for n in order]
    items = compile_issues(issues)
    position = {item["key"]: i for i, item in enumerate(items)}
    assert len(items) == len(order)
    for item in items:
        number = int(item["key"].split("#")[1])
        assert set(item["depends_on"]) == {f"acme/widgets#{d}" for d in deps[number]}
        assert all(position[dep] < position[item["key"]] for dep in item["depends_on"])


@settings(deadline=None)
@given(
    st.dictionaries(
        st.text("abcdefgh", min_size=1, max_size=2),
        st.lists(st.text("abcdefgh", min_size=1, max_size=2), max_size=3),
        max_size=20,
    ),
    st.lists(st.text("abcdefgh", min_size=1, max_size=2), min_size=1, max_size=6),
)
def test_find_cycle_returns_a_real_cycle_when_one_is_planted(graph, loop):
    for node, nxt in zip(loop, loop[1:] + loop[:1]):
        graph.setdefault(node, []).append(nxt)
    cycle = find_cycle(graph)
    assert cycle is not None and len(cycle) >= 2 and cycle[0] == cycle[-1]
    assert all(b in graph.get(a, []) for a, b in zip(cycle, cycle[1:]))


def test_cycle_messages_are_one_line():
    with pytest.raises(CycleError) as err:
        topological_order({"a": ["b"], "b": ["a"]})
    assert re.fullmatch(
        r"dependency cycle: a → b → a \(each depends on the next\); .*", str(err.value)
    )
