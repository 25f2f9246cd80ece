"""Townhall: the always-on REST API of a town, as a WSGI app for gunicorn.

    gunicorn townhall:app          (in a town made by `tt init`: its gunicorn.conf.py applies [townhall])
    gunicorn -c python:tinytown.gunicorn_conf townhall:app

Refuses to start on a non-loopback bind without auth, or with unreadable TLS files.
"""

from tinytown.api import create_app
from tinytown.api.startup import gunicorn_command_binds, townhall_config

app = create_app(townhall_config(binds=gunicorn_command_binds()))
