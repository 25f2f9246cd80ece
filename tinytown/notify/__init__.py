"""Notifications, delivered once: a ping when a mission completes, fails or needs help, when a
task fails after its retries, or when a worker is unhealthy (docs/notifications.md).

- :mod:`.message` — what a notification is and its one-line human text (pure);
- :mod:`.targets` — the HTTP request for a webhook, ntfy or Slack target, and ``redact`` (pure);
- :mod:`.policy` — which targets want an event, and the retry backoff (pure);
- :mod:`.send` — one HTTP attempt, its outcome told without the URL;
- :mod:`.deliver` — :class:`~tinytown.notify.deliver.Notifier`, townhall's threads that route
  events to the outbox and deliver it (Redis through :mod:`tinytown.store.outbox`).

The guarantee: at least once, with one ``Idempotency-Key`` per (event, target) that stays the
same on every retry and after any crash. A receiver that drops keys it has seen gets each
notification exactly once; ntfy and Slack do not dedupe, so a crash at the wrong instant can
repeat a ping there.
"""
