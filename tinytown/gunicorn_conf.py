"""gunicorn settings from the town's ``[townhall]`` table.

    gunicorn -c python:tinytown.gunicorn_conf townhall:app
    gunicorn townhall:app        # in a town made by `tt init`, whose gunicorn.conf.py imports this

Reads ``tinytown.toml`` from ``$TINYTOWN_TOWN_DIR`` or the current directory: bind and port,
workers, timeouts, TLS (``certfile``/``keyfile``) and mTLS (``ca_certs``, client certificate
required when ``[townhall.mtls] required = true``). Flags on the gunicorn command line still win;
the start-up rules are checked against the addresses actually bound, in the master, before any
worker starts: a non-loopback bind without auth, or unreadable TLS files, stop it with exit
status 3 and the fix in the message.
"""

import ssl
import sys

from tinytown.config import load_config
from tinytown.errors import ConfigError, ExitStatus
from tinytown.redis_url import resolve_target

_config = load_config()
_th = _config.townhall

_host = f"[{_th.bind}]" if ":" in _th.bind else _th.bind
bind = [f"{_host}:{_th.rest_port}"]
workers = _th.workers
# gunicorn's timeout is a worker-silence limit, not a per-request one: keep it at least the
# request timeout so a slow request is not killed mid-way.
timeout = max(30, -(-_th.request_timeout_ms // 1000))
graceful_timeout = 10
accesslog = "-"
errorlog = "-"
proc_name = f"townhall-{_config.name}"
control_socket_disable = True  # gunicorn ≥ 24 otherwise shares ~/.gunicorn/gunicorn.ctl across towns

if _th.tls.enabled:
    certfile = str(_config.path(_th.tls.cert_file)) if _th.tls.cert_file else None
    keyfile = str(_config.path(_th.tls.key_file)) if _th.tls.key_file else None
if _th.mtls.enabled or _th.mtls.required:
    ca_certs = str(_config.path(_th.mtls.ca_file)) if _th.mtls.ca_file else None
    # required: no certificate, no connection. enabled alone: a presented one must verify.
    cert_reqs = ssl.CERT_REQUIRED if _th.mtls.required else ssl.CERT_OPTIONAL


def on_starting(server):
    """In the master, once: bootstrap a key if asked, enforce the start-up rules, start Redis."""
    from tinytown.api.startup import townhall_config

    try:
        config = townhall_config(binds=server.cfg.bind)
    except ConfigError as err:
        print(f"townhall: {err}", file=sys.stderr, flush=True)
        sys.exit(ExitStatus.CONFIG_ERROR)
    if resolve_target(config).managed:
        from tinytown.embedded import EmbeddedServer

        EmbeddedServer(config).ensure_running()
