"""Redis URLs: passwords never shown, usernames kept."""

from __future__ import annotations

import pytest

from tinytown.core.urls import is_loopback, redact_text, redact_url


@pytest.mark.parametrize(
    "url,shown",
    [
        ("redis://:s3cret@host:6379/0", "redis://:****@host:6379/0"),
        (
            "rediss://default:s3cret@db.example.com:10000/0",
            "rediss://default:****@db.example.com:10000/0",
        ),
        ("redis://user:p%40ss@[::1]:6379", "redis://user:****@[::1]:6379"),
        ("redis://host:6379/0", "redis://host:6379/0"),
        ("unix:///tmp/town/.tt/redis.sock", "unix:///tmp/town/.tt/redis.sock"),
        ("unix:///tmp/r.sock?db=0&password=hunter2", "unix:///tmp/r.sock?db=0&password=****"),
    ],
)
def test_redact_url_hides_the_password_and_keeps_the_rest(url, shown):
    assert redact_url(url) == shown


def test_redact_text_scrubs_raw_and_encoded_passwords():
    url = "redis://u:p@ss w@host:1/0".replace(" ", "%20")
    text = f"error connecting to {url}: auth p@ss%20w rejected, p@ss w"
    scrubbed = redact_text(text, url)
    assert "p@ss" not in scrubbed and "****" in scrubbed


@pytest.mark.parametrize(
    "host,loop",
    [
        ("127.0.0.1", True),
        ("127.9.9.9", True),
        ("::1", True),
        ("localhost", True),
        ("10.0.0.1", False),
        ("redis.example.com", False),
    ],
)
def test_loopback_detection(host, loop):
    assert is_loopback(host) is loop
