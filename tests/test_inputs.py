"""The input rules (tinytown.core.inputs), as properties over generated input (hypothesis): whatever
arrives, the decoder returns a document within the limits or raises InputError — never anything
else — and the field rules accept exactly what they document."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tinytown.core import defaults, inputs
from tinytown.core.inputs import InputError

# JSON documents within the limits: valid text, small numbers, shallow nesting.
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(10**15), 10**15)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
DOCUMENTS = st.recursive(
    SCALARS,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(), kids, max_size=4),
    max_leaves=30,
)
LONE_SURROGATES = st.integers(0xD800, 0xDFFF).map(chr)


def depth(value) -> int:
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    return 0


@given(DOCUMENTS)
def test_every_document_within_the_limits_decodes_to_itself(doc):
    assume(depth(doc) <= defaults.INPUT_MAX_DEPTH)
    assert inputs.decode_json(json.dumps(doc).encode()) == json.loads(json.dumps(doc))


@given(st.binary(max_size=300))
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_any_bytes_decode_or_raise_input_error_and_nothing_else(raw):
    try:
        inputs.decode_json(raw)
    except InputError as err:
        assert err.status in (400, 422) and str(err)


@given(st.text(alphabet='[]{}":,0123456789e.-tfnrul \\ud', max_size=200))
def test_any_json_looking_text_decodes_or_raises_input_error(text):
    try:
        inputs.decode_json(text.encode())
    except InputError:
        pass


@given(DOCUMENTS, LONE_SURROGATES, st.text(max_size=5))
def test_a_lone_surrogate_anywhere_is_refused_naming_where(doc, surrogate, key):
    poisoned = {"outer": [doc, {key or "k": f"x{surrogate}y"}]}
    raw = json.dumps(poisoned).encode()  # \\udXXX escapes: valid ASCII, invalid text once decoded
    with pytest.raises(InputError) as err:
        inputs.decode_json(raw)
    assert err.value.field.startswith("outer[1]") or "key" in err.value.field
    assert "lone surrogate" in str(err.value)


@pytest.mark.parametrize(
    "levels", [1, defaults.INPUT_MAX_DEPTH, defaults.INPUT_MAX_DEPTH + 1, 500, 5000, 100_000]
)
def test_nesting_is_bounded_at_the_documented_depth(levels):
    raw = b"[" * levels + b"]" * levels
    if levels <= defaults.INPUT_MAX_DEPTH:
        assert depth(inputs.decode_json(raw)) == levels
    else:
        with pytest.raises(InputError, match="nested deeper than") as err:
            inputs.decode_json(raw)
        assert err.value.status == 400


@pytest.mark.parametrize(
    "literal",
    [b"1" * 33, b"1" * 5000, b"-" + b"9" * 40, b"1." + b"0" * 40, b"1e999", b"NaN", b"-Infinity"],
)
def test_numbers_past_the_limits_are_refused_not_crashed_on(literal):
    with pytest.raises(InputError) as err:
        inputs.decode_json(b'{"n": ' + literal + b"}")
    assert err.value.status == 400


def test_a_body_that_is_not_utf8_names_the_offset():
    with pytest.raises(InputError, match="offset 8"):
        inputs.decode_json(b'{"a": "x\xff"}')


NAME_CHARS = "ABCXYZabcxyz0189._-"


@given(st.text(alphabet=NAME_CHARS, min_size=1, max_size=64).filter(lambda s: s[0].isalnum()))
def test_names_from_the_documented_set_are_accepted(name):
    assert inputs.name(name, "name") == name


@given(st.text(min_size=1, max_size=70))
def test_a_name_outside_the_set_is_refused_with_the_rule(name):
    assume(
        not (
            name[0].isascii()
            and name[0].isalnum()
            and len(name) <= 64
            and all(c in NAME_CHARS or c.isascii() and c.isalnum() for c in name)
        )
    )
    with pytest.raises(InputError, match="a name is 1-64 characters"):
        inputs.name(name, "name")


@given(
    st.text(max_size=50),
    st.sampled_from(["\x00", "\x07", "\x1b", "\x7f", "\x85"]),
    st.text(max_size=50),
)
def test_control_characters_are_refused_in_text(before, control, after):
    with pytest.raises(InputError, match="control character"):
        inputs.text(before + control + after, "description")


def test_multiline_text_keeps_newlines_and_tabs_but_one_line_values_do_not():
    assert inputs.text("a\nb\tc\r\n", "description") == "a\nb\tc\r\n"
    with pytest.raises(InputError, match="one line"):
        inputs.text("a\nb", "kind", multiline=False)


def test_text_longer_than_its_limit_is_refused():
    with pytest.raises(InputError, match="at most 10"):
        inputs.text("x" * 11, "t", max_chars=10)


@pytest.mark.parametrize(
    "repo",
    [
        "https://github.com/o/r.git",
        "http://host/r",
        "ssh://git@host/r.git",
        "git://host/r",
        "file:///srv/r.git",
        "git@github.com:owner/repo.git",
        "/srv/repos/r",
        "../r",
        "repos/r",
    ],
)
def test_repositories_by_the_documented_schemes_are_accepted(repo):
    assert inputs.repo(repo) == repo


@pytest.mark.parametrize(
    "repo",
    [
        "ext::sh -c touch% /tmp/pwned",
        "fd::17",
        "--upload-pack=touch /tmp/x",
        "-u x",
        "ftp://host/r",
        "javascript://x",
        " https://host/r",
        "https://host/r\n",
        "",
    ],
)
def test_other_repositories_are_refused(repo):
    with pytest.raises(InputError):
        inputs.repo(repo)


@pytest.mark.parametrize("branch", ["main", "feature/x-1", "release-2.0", "tt/abc"])
def test_git_branch_names_are_accepted(branch):
    assert inputs.branch(branch, "base_branch") == branch


@pytest.mark.parametrize(
    "branch",
    [
        "-x",
        "--upload-pack=x",
        "a..b",
        "a b",
        "a~1",
        "a^",
        "a:b",
        "x.lock",
        "a/",
        ".a",
        "a//b",
        "@",
        "a@{1}",
    ],
)
def test_what_git_or_its_options_would_misread_is_refused_as_a_branch(branch):
    with pytest.raises(InputError, match="git branch name"):
        inputs.branch(branch, "base_branch")


@given(
    st.lists(
        st.text(min_size=1, max_size=20).filter(
            lambda t: t.strip() and "," not in t and t.isprintable()
        ),
        max_size=defaults.INPUT_MAX_TAGS,
    )
)
def test_tags_within_the_limits_are_kept(tags):
    assert inputs.tags(tags) == tags


def test_too_many_tags_or_a_tag_with_a_comma_is_refused():
    with pytest.raises(InputError, match="at most"):
        inputs.tags(["t"] * (defaults.INPUT_MAX_TAGS + 1))
    with pytest.raises(InputError, match="no comma"):
        inputs.tags(["a,b"])


@given(st.text() | st.lists(LONE_SURROGATES).map("".join))
def test_printable_always_gives_encodable_text(value):
    cleaned = inputs.printable(value)
    assert cleaned.encode("utf-8").decode("utf-8") == cleaned and len(cleaned) == len(value)
    assert inputs.printable("plain ✓") == "plain ✓"
