"""gunicorn settings from the town's ``[townhall]`` table.

    gunicorn -c python:tinytown.gunicorn_conf townhall:app

Reads ``tinytown.toml`` from ``$TINYTOWN_TOWN_DIR`` or the current directory. Flags given on
the gunicorn command line still win over these values.
"""

from tinytown.config import load_config
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


def on_starting(server):  # noqa: ARG001 - gunicorn hook signature
    """Start the town's own Redis once, in the master, before any worker connects."""
    if resolve_target(_config).managed:
        from tinytown.embedded import EmbeddedServer

        EmbeddedServer(_config).ensure_running()
