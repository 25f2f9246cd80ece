"""Townhall: the always-on REST API of a town, as a WSGI app for gunicorn.

    gunicorn -c python:tinytown.gunicorn_conf townhall:app
    gunicorn townhall:app  (in a town made by `tt init`: its gunicorn.conf.py applies [townhall])

Each gunicorn worker also runs the town's background duties: the keeper
(``tinytown.keeper``), which recovers dead agents' work; the mission dispatcher
(``tinytown.missions.dispatcher``; a lease per mission keeps one acting on it), unless
``[missions] dispatcher = false``; and the notifier (``tinytown.notify``), which sends
``[[notify]]`` pings. Refuses to start on a non-loopback bind without auth, with unreadable TLS
files, or with TLS on under a gunicorn that does not apply [townhall] (exit 3); or when Redis
cannot be used (exit 4).
"""

from tinytown.api import create_app, logs
from tinytown.api.startup import (
    check_gunicorn_settings,
    gunicorn_command_binds,
    refuse_to_start,
    townhall_config,
)
from tinytown.core.errors import TinytownError

logs.configure()
try:
    _config = townhall_config(binds=gunicorn_command_binds())
    check_gunicorn_settings(_config)
    app = create_app(_config, background=True)
except TinytownError as err:
    refuse_to_start(err)
