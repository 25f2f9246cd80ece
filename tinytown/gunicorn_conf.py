"""gunicorn settings from the town's ``[townhall]`` table.

    gunicorn -c python:tinytown.gunicorn_conf townhall:app
    gunicorn townhall:app        # in a town made by `tt init`, whose gunicorn.conf.py imports this

Reads ``tinytown.toml`` from ``$TINYTOWN_TOWN_DIR`` or the current directory: bind and port,
workers, timeouts, TLS (``certfile``/``keyfile``) and mTLS (``ca_certs``, client certificate
required when ``[townhall.mtls] required = true``). Each worker is a
:class:`tinytown.api.server.BufferingWorker`: gthread's threads, but a thread only gets a request
that has fully arrived, so slow or stalled clients cannot hold them (limits in docs/api.md,
"Limits and slow clients"). Flags on the gunicorn command line still win;
the start-up rules are checked against the addresses actually bound, in the master, before any
worker starts. An invalid ``tinytown.toml``, a non-loopback bind without auth or unreadable TLS
files stop it with exit status 3; an address another process listens on (another townhall?) with
exit status 6; a Redis that cannot be reached, refuses the credentials or is older than 7.0 with
exit status 4 — each with a one-line reason on stderr.
"""

import ssl

from tinytown.api.startup import refuse_to_start
from tinytown.config import load_config
from tinytown.core import defaults
from tinytown.core.errors import TinytownError

try:
    _config = load_config()
except TinytownError as err:  # gunicorn would report it as "Error: …" and exit 1
    refuse_to_start(err)
_th = _config.townhall

_host = f"[{_th.bind}]" if ":" in _th.bind else _th.bind
bind = [f"{_host}:{_th.rest_port}"]
workers = _th.workers
# reads [townhall] max_body_bytes, request_read_timeout_secs
worker_class = "tinytown.api.server.BufferingWorker"
threads = defaults.TOWNHALL_THREADS
worker_connections = defaults.TOWNHALL_WORKER_CONNECTIONS
keepalive = defaults.TOWNHALL_KEEPALIVE_SECS
limit_request_line = defaults.TOWNHALL_REQUEST_LINE_MAX_BYTES
limit_request_fields = defaults.TOWNHALL_HEADER_FIELDS_MAX
limit_request_field_size = defaults.TOWNHALL_HEADER_FIELD_MAX_BYTES
# gunicorn's timeout is a worker-silence limit, not a per-request one: keep it at least the
# request timeout so a slow request is not killed mid-way. BufferingWorker stops reporting in
# while a request has run past it, so gunicorn still restarts a worker stuck in one.
timeout = max(30, -(-_th.request_timeout_ms // 1000))
graceful_timeout = 10
accesslog = "-"
errorlog = "-"
proc_name = f"townhall-{_config.name}"
control_socket_disable = (
    True  # gunicorn ≥ 24 otherwise shares ~/.gunicorn/gunicorn.ctl across towns
)

if _th.tls.enabled:
    certfile = str(_config.path(_th.tls.cert_file)) if _th.tls.cert_file else None
    keyfile = str(_config.path(_th.tls.key_file)) if _th.tls.key_file else None
if _th.mtls.enabled or _th.mtls.required:
    ca_certs = str(_config.path(_th.mtls.ca_file)) if _th.mtls.ca_file else None
    # required: no certificate, no connection. enabled alone: a presented one must verify.
    cert_reqs = ssl.CERT_REQUIRED if _th.mtls.required else ssl.CERT_OPTIONAL


def on_starting(server):
    """In the master, once, before any worker boots and before gunicorn binds: bootstrap a key if
    asked, enforce the start-up rules, warn once if tinytown.toml holds secrets others may read,
    check that the port is free, start the town's own Redis if needed and check that Redis
    answers."""
    import logging

    from tinytown.api.startup import check_addresses_free, inherits_listeners, townhall_config
    from tinytown.config.exposure import exposure
    from tinytown.connection.client import connect

    try:
        config = townhall_config(binds=server.cfg.bind)
        if (exposed := exposure(config.file)) is not None:
            logging.getLogger("tinytown.townhall").warning(
                "event=config_exposed %s", exposed.log_fields()
            )
        if not inherits_listeners(server):
            check_addresses_free(server.cfg.address)
        connect(config).close()
    except TinytownError as err:  # ConfigError → 3, AddressInUse → 6, RedisUnavailable → 4
        refuse_to_start(err)


def worker_exit(server, worker):
    """In each worker as it leaves, after its last request: a notification it is sending is
    answered and recorded first, within the graceful timeout. A send cut off by the exit would
    be taken over later and sent again, so a plain restart would ping twice."""
    notifier = getattr(getattr(worker, "wsgi", None), "config", {}).get("NOTIFIER")
    if notifier is not None:
        notifier.finish_sending(max(1, graceful_timeout - 2))
