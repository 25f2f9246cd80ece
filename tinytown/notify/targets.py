"""The HTTP request each kind of target gets, and a target's URL as it may be logged. Pure.

- ``webhook``: a JSON body ``{"id", "kind", "town", "event", "text", "url"}`` (``url``: the page
  to open, null without ``[townhall] public_url``); with a secret, the body is signed:
  ``X-Tinytown-Signature: sha256=<hex HMAC-SHA256 of the raw body>``, plus
  ``X-Tinytown-Timestamp`` (the attempt's Unix time; the receiver dedupes on ``id``).
- ``ntfy``: POST to the topic URL, the text as the body, ``Title``, ``Priority``, ``Tags`` and
  ``Click`` (the page a tap opens, with a ``public_url``).
- ``slack``: an incoming webhook's JSON ``{"text": …}``, the text escaped as Slack asks (so a
  task's output cannot write ``<!channel>`` or hide a link behind words of its own),
  ``<url|Open>`` after it, and no link previews.

Every request carries ``Idempotency-Key`` (the notification's key). ntfy ignores headers it
does not know and Slack has no idempotency header: neither dedupes, so a retry after a crash at
the wrong instant repeats the ping there.
"""

from __future__ import annotations

import hashlib
import hmac
import json

from tinytown.config.notify import NotifyTarget
from tinytown.core import events as ev
from tinytown.core.urls import address_only
from tinytown.notify.message import Notification

USER_AGENT = "tinytown-notify"
JSON = "application/json"
# ntfy's priority and emoji tag for a notification of each kind when the target sets none.
NTFY_PRIORITY_BY_KIND = {ev.NOTIFY_MISSION_COMPLETED: 3}
NTFY_PRIORITY_DEFAULT = 4
NTFY_TAG_BY_KIND = {
    ev.NOTIFY_MISSION_COMPLETED: "white_check_mark",
    ev.NOTIFY_MISSION_FAILED: "x",
    ev.NOTIFY_MISSION_HELP: "raising_hand",
    ev.NOTIFY_TASK_FAILED: "warning",
    ev.NOTIFY_WORKER_UNHEALTHY: "rotating_light",
}

Request = tuple[str, dict[str, str], bytes]


def _json(value) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def signature(secret: str, body: bytes) -> str:
    """``sha256=<hex>``: the HMAC-SHA256 of the raw body under the target's secret."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _webhook(target: NotifyTarget, n: Notification) -> Request:
    body = _json(
        {
            "id": n.key,
            "kind": n.kind,
            "town": n.town,
            "event": dict(n.event),
            "text": n.text,
            "url": n.link or None,
        }
    )
    headers = {"Content-Type": JSON, "Idempotency-Key": n.key, "User-Agent": USER_AGENT}
    if target.secret:
        headers["X-Tinytown-Timestamp"] = str(n.sent_at)
        headers["X-Tinytown-Signature"] = signature(target.secret, body)
    return target.url, headers, body


def _ntfy(target: NotifyTarget, n: Notification) -> Request:
    priority = target.priority or NTFY_PRIORITY_BY_KIND.get(n.kind, NTFY_PRIORITY_DEFAULT)
    tags = [*target.tags, NTFY_TAG_BY_KIND.get(n.kind, "bell")]
    headers = {
        "Content-Type": "text/plain; charset=utf-8",
        "Title": n.title,
        "Priority": str(priority),
        "Tags": ",".join(tags),
        "Idempotency-Key": n.key,
        "User-Agent": USER_AGENT,
    }
    if n.link:
        headers["Click"] = n.link
    return target.url, headers, n.text.encode()


def slack_escaped(text: str) -> str:
    """``text`` as Slack shows it literally: ``&``, ``<`` and ``>`` escaped (Slack reads
    ``<…>`` as a link or a mention such as ``<!channel>``)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _slack(target: NotifyTarget, n: Notification) -> Request:
    headers = {"Content-Type": JSON, "Idempotency-Key": n.key, "User-Agent": USER_AGENT}
    text = slack_escaped(f"[{n.town}] {n.text}")
    if n.link:  # (public_base_url admits no < > | in it)
        text += f" <{n.link}|Open>"
    # no previews: a link quoted from a task's output must not unfold into a card
    body = {"text": text, "unfurl_links": False, "unfurl_media": False}
    return target.url, headers, _json(body)


BUILDERS = {"webhook": _webhook, "ntfy": _ntfy, "slack": _slack}


def build_request(target: NotifyTarget, notification: Notification) -> Request:
    """``(url, headers, body)`` of the POST that delivers ``notification`` to ``target``."""
    return BUILDERS[target.kind](target, notification)


def redact(url: str) -> str:
    """``scheme://host[:port]/…``: a target URL safe to log or print (ntfy topics, Slack tokens
    and webhook keys live in the path or query; user and password are dropped too)."""
    return address_only(url)
