"""``[[notify]]`` in tinytown.toml: what a target reads as, and every rejection naming its key."""

from __future__ import annotations

import pytest

from tinytown.config import load_config
from tinytown.core.errors import ConfigError
from tinytown.core.events import NOTIFICATION_KINDS

MISSION = "1a2b3c4d-0000-4000-8000-000000000001"


def load(tmp_path, text: str, env: dict | None = None):
    (tmp_path / "tinytown.toml").write_text(text)
    return load_config(tmp_path, env=env or {})


def rejected(tmp_path, text: str, env: dict | None = None) -> str:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, text, env)
    return str(err.value)


def target(body: str, kind: str = "webhook", url: str = "https://hooks.example/t0k3n") -> str:
    return f'[[notify]]\nname = "ok"\nkind = "{kind}"\nurl = "{url}"\n{body}\n'


def test_no_notify_tables_means_no_targets(tmp_path):
    assert load(tmp_path, 'name = "quiet"\n').notify == ()


def test_a_webhook_target_reads_with_every_default(tmp_path):
    (t,) = load(tmp_path, target("")).notify
    assert (t.name, t.kind, t.url) == ("ok", "webhook", "https://hooks.example/t0k3n")
    assert t.events == NOTIFICATION_KINDS and t.missions == ()
    assert t.secret is None and t.priority is None and t.tags == () and t.timeout_secs == 10


def test_kind_defaults_to_webhook(tmp_path):
    (t,) = load(tmp_path, '[[notify]]\nname = "a"\nurl = "http://127.0.0.1:9/x"\n').notify
    assert t.kind == "webhook"


def test_an_ntfy_target_reads_filters_priority_and_tags(tmp_path):
    text = target(
        f'events = ["mission_completed", "mission_help_needed"]\nmissions = ["{MISSION.upper()}"]\n'
        'priority = "urgent"\ntags = ["robot", "+1"]\ntimeout_secs = 3',
        kind="ntfy",
        url="https://ntfy.sh/secret-topic",
    )
    (t,) = load(tmp_path, text).notify
    assert t.events == ("mission_completed", "mission_help_needed")
    assert t.missions == (MISSION,)
    assert (t.priority, t.tags, t.timeout_secs) == (5, ("robot", "+1"), 3)


def test_ntfy_priority_may_be_a_number(tmp_path):
    (t,) = load(tmp_path, target("priority = 2", kind="ntfy")).notify
    assert t.priority == 2


def test_targets_keep_their_order(tmp_path):
    text = target("") + target("", kind="slack").replace('"ok"', '"team"')
    assert [t.name for t in load(tmp_path, text).notify] == ["ok", "team"]


def test_the_secret_may_come_from_the_environment(tmp_path):
    (t,) = load(tmp_path, target('secret_env = "HOOK_SECRET"'), {"HOOK_SECRET": "s3"}).notify
    assert t.secret == "s3"


def test_the_url_and_secret_stay_out_of_the_repr(tmp_path):
    (t,) = load(tmp_path, target('secret = "hunter2"')).notify
    assert "t0k3n" not in repr(t) and "hunter2" not in repr(t)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            'notify = "x"\n',
            "notify = 'x' is invalid; expected an array of tables [[notify]]",
        ),
        (
            '[[notify]]\nkind = "ntfy"\nurl = "https://ntfy.sh/x"\n',
            "notify[0].name = None is invalid; expected a name of 1-64 characters",
        ),
        (
            target("") + '[[notify]]\nname = "bad name"\nurl = "https://x.example/"\n',
            "notify[1].name = 'bad name' is invalid; expected a name of 1-64 characters",
        ),
        (
            target("") + target(""),
            "notify[1].name = 'ok' is invalid; expected a name no other [[notify]] table uses",
        ),
        (
            target("", kind="email"),
            'notify[0].kind = \'email\' is invalid; expected one of "webhook", "ntfy", "slack"',
        ),
        (
            target("") + '[[notify]]\nname = "b"\nurl = "ftp://x"\n',
            "tinytown.toml: notify[1].url = 'ftp://x' is invalid; expected an http:// or "
            "https:// URL",
        ),
        (
            '[[notify]]\nname = "b"\n',
            "notify[0].url = None is invalid; expected an http:// or https:// URL",
        ),
        (
            target("", url="https:///no-host"),
            "notify[0].url = 'https:///no-host' is invalid; expected an http:// or https:// URL",
        ),
        (
            target('events = ["mission_done"]'),
            "notify[0].events = ['mission_done'] is invalid; expected a non-empty list from "
            '"mission_completed", "mission_failed", "mission_help_needed", "task_failed", '
            "\"worker_unhealthy\" ('mission_done' is not one)",
        ),
        (
            target("events = []"),
            "notify[0].events = [] is invalid; expected a non-empty list from",
        ),
        (
            target('missions = ["1a2b3c4d"]'),
            "notify[0].missions = ['1a2b3c4d'] is invalid; expected a non-empty list of "
            "mission ids (UUIDs); omit it for every mission ('1a2b3c4d' is not one)",
        ),
        (
            target("priority = 6", kind="ntfy"),
            "notify[0].priority = 6 is invalid; expected an integer from 1 to 5 or one of "
            '"min", "low", "default", "high", "urgent"',
        ),
        (
            target('priority = "loud"', kind="ntfy"),
            "notify[0].priority = 'loud' is invalid; expected an integer from 1 to 5",
        ),
        (
            target('tags = ["a,b"]', kind="ntfy"),
            "notify[0].tags = ['a,b'] is invalid; expected a non-empty list of tags "
            "(A-Z a-z 0-9 _ + . : -) ('a,b' is not one)",
        ),
        (
            target("tags = [" + ", ".join(f'"t{i}"' for i in range(11)) + "]", kind="ntfy"),
            "is invalid; expected at most 10 tags",
        ),
        (
            target("timeout_secs = 0"),
            "notify[0].timeout_secs = 0 is invalid; expected an integer from 1 to 120",
        ),
        (
            target('priority = "high"', kind="slack"),
            "notify[0].priority is only for kind = 'ntfy'; this target is kind = 'slack'",
        ),
        (
            target('tags = ["x"]'),
            "notify[0].tags is only for kind = 'ntfy'; this target is kind = 'webhook'",
        ),
        (
            target('secret = "s"', kind="ntfy"),
            "notify[0].secret is only for kind = 'webhook'; this target is kind = 'ntfy'",
        ),
        (
            target('secret = "s"\nsecret_env = "S"'),
            "notify[0].secret and secret_env are both set; give one of them",
        ),
        (
            target('secret = ""'),
            "notify[0].secret is invalid; expected a non-empty string",
        ),
        (
            target('secret_env = "not a name"'),
            "notify[0].secret_env = 'not a name' is invalid; expected the name of an "
            "environment variable",
        ),
        (
            target('secret_env = "HOOK_SECRET"'),
            "notify[0].secret_env = 'HOOK_SECRET', but the environment variable HOOK_SECRET "
            "is not set or empty; export it where townhall runs",
        ),
        (
            target('colour = "red"'),
            "unknown key notify[0].colour; [notify[0]] accepts:",
        ),
    ],
)
def test_every_invalid_value_is_rejected_naming_its_key(tmp_path, text, message):
    assert message in rejected(tmp_path, text)


def test_a_rejected_secret_is_never_echoed(tmp_path):
    text = target('secret = "hunter2"', kind="slack")
    assert "hunter2" not in rejected(tmp_path, text)
